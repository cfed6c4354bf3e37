package web

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/wehr/wehr/dmarcreport"
)

// dailyChart draws the daily series as stacked bars, server-side: per
// day the messages that passed DMARC (below) and those that failed
// (above). Each day's group carries its figures as data- attributes,
// and a title a browser shows on hover, so that no script is needed and
// a test can read the chart back.
func dailyChart(days []dmarcreport.Day) template.HTML {
	const w, h, top, bottom, left = 800.0, 220.0, 10.0, 30.0, 50.0
	var peak int64
	for _, d := range days {
		peak = max(peak, d.Messages)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="messages per day, passing and failing DMARC" data-days="%d" data-peak="%d">`,
		w, h, len(days), peak)
	if len(days) == 0 || peak == 0 {
		b.WriteString(`<text x="400" y="110" text-anchor="middle">no reports yet</text></svg>`)
		return template.HTML(b.String())
	}
	plotH := h - top - bottom
	bw := (w - left) / float64(len(days))
	y := func(n int64) float64 { return plotH * float64(n) / float64(peak) }
	fmt.Fprintf(&b, `<line class="axis" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f"/>`, left, top+plotH, w, top+plotH)
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.1f" text-anchor="end">%d</text>`, left-4, top+8, peak)
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.1f" text-anchor="end">0</text>`, left-4, top+plotH)
	for i, d := range days {
		x := left + float64(i)*bw
		fmt.Fprintf(&b, `<g class="day" data-date="%s" data-pass="%d" data-fail="%d"><title>%s: %d messages, %d pass, %d fail</title>`,
			d.Date, d.Pass, d.Fail, d.Date, d.Messages, d.Pass, d.Fail)
		hp, hf := y(d.Pass), y(d.Fail)
		if d.Pass > 0 {
			fmt.Fprintf(&b, `<rect class="pass" x="%.2f" y="%.2f" width="%.2f" height="%.2f"/>`, x, top+plotH-hp, max(bw*0.8, 0.5), hp)
		}
		if d.Fail > 0 {
			fmt.Fprintf(&b, `<rect class="fail" x="%.2f" y="%.2f" width="%.2f" height="%.2f"/>`, x, top+plotH-hp-hf, max(bw*0.8, 0.5), hf)
		}
		b.WriteString(`</g>`)
	}
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.0f">%s</text>`, left, h-8, days[0].Date)
	fmt.Fprintf(&b, `<text class="label" x="%.0f" y="%.0f" text-anchor="end">%s</text>`, w, h-8, days[len(days)-1].Date)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
