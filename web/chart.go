package web

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/tlsrpt"
)

// bar is one day of a stacked chart: good below, bad above.
type bar struct {
	date      string
	good, bad int64
}

// series names a chart's figures: its label for screen readers, and the
// names of its data- attributes (a test reads the chart back by them).
type series struct {
	label, good, bad string
	// rate draws the share of good as a line, on a scale of 0 to 100 %
	// at the right (data-rate, in per cent, on each day).
	rate bool
}

// dailyChart draws the DMARC series: per day the messages that passed
// DMARC (below) and those that failed (above), and the share that
// passed as a line; org names one reporting organisation's figures ("":
// all of them).
func dailyChart(days []dmarcreport.Day, org string) template.HTML {
	bars := make([]bar, len(days))
	for i, d := range days {
		bars[i] = bar{date: d.Date, good: d.Pass, bad: d.Fail}
		if org == "" {
			continue
		}
		bars[i].good, bars[i].bad = 0, 0
		for _, o := range d.Orgs {
			if o.Org == org {
				bars[i].good, bars[i].bad = o.Pass, o.Fail
			}
		}
	}
	return stacked(bars, series{"messages per day, passing and failing DMARC", "pass", "fail", true})
}

// tlsChart draws the TLS series: per day the sessions with TLS (below)
// and the failed ones (above).
func tlsChart(days []tlsrpt.Day) template.HTML {
	bars := make([]bar, len(days))
	for i, d := range days {
		bars[i] = bar{d.Date, d.Successful, d.Failed}
	}
	return stacked(bars, series{"TLS sessions per day, successful and failed", "ok", "failed", false})
}

// stacked draws bars server-side, as SVG. Each day's group carries its
// figures as data- attributes, and a title a browser shows on hover, so
// that no script is needed. Dates are ours (YYYY-MM-DD), figures
// numbers: nothing a reporter wrote reaches the SVG.
func stacked(bars []bar, s series) template.HTML {
	const w, h, top, bottom, left = 800.0, 220.0, 10.0, 30.0, 50.0
	var peak int64
	for _, b := range bars {
		peak = max(peak, b.good+b.bad)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s" data-days="%d" data-peak="%d">`,
		w, h, s.label, len(bars), peak)
	if len(bars) == 0 || peak == 0 {
		b.WriteString(`<text x="400" y="110" text-anchor="middle">no reports yet</text></svg>`)
		return template.HTML(b.String())
	}
	plotH := h - top - bottom
	bw := (w - left) / float64(len(bars))
	y := func(n int64) float64 { return plotH * float64(n) / float64(peak) }
	fmt.Fprintf(&b, `<line class="axis" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f"/>`, left, top+plotH, w, top+plotH)
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.1f" text-anchor="end">%d</text>`, left-4, top+8, peak)
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.1f" text-anchor="end">0</text>`, left-4, top+plotH)
	var line []string
	for i, d := range bars {
		x := left + float64(i)*bw
		rate := ""
		if total := d.good + d.bad; s.rate && total > 0 {
			r := 100 * float64(d.good) / float64(total)
			rate = fmt.Sprintf(` data-rate="%.1f"`, r)
			line = append(line, fmt.Sprintf("%.2f,%.2f", x+bw*0.4, top+plotH*(1-r/100)))
		}
		fmt.Fprintf(&b, `<g class="day" data-date="%s" data-%s="%d" data-%s="%d"%s><title>%s: %d %s, %d %s</title>`,
			d.date, s.good, d.good, s.bad, d.bad, rate, d.date, d.good, s.good, d.bad, s.bad)
		hg, hb := y(d.good), y(d.bad)
		if d.good > 0 {
			fmt.Fprintf(&b, `<rect class="pass" x="%.2f" y="%.2f" width="%.2f" height="%.2f"/>`, x, top+plotH-hg, max(bw*0.8, 0.5), hg)
		}
		if d.bad > 0 {
			fmt.Fprintf(&b, `<rect class="fail" x="%.2f" y="%.2f" width="%.2f" height="%.2f"/>`, x, top+plotH-hg-hb, max(bw*0.8, 0.5), hb)
		}
		b.WriteString(`</g>`)
	}
	if len(line) > 0 {
		fmt.Fprintf(&b, `<polyline class="rate" points="%s"/>`, strings.Join(line, " "))
		fmt.Fprintf(&b, `<text class="label rate-label" x="%.0f" y="%.1f" text-anchor="end">100 %% passed</text>`, w, top+8)
	}
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.0f">%s</text>`, left, h-8, bars[0].date)
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.0f" text-anchor="end">%s</text>`, w, h-8, bars[len(bars)-1].date)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
