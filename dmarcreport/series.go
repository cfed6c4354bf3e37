package dmarcreport

import (
	"time"
)

// Day is one UTC day of a domain's received reports: what the charts of
// volume and DMARC pass rate over time show.
type Day struct {
	Date     string `json:"date"` // YYYY-MM-DD
	Reports  int    `json:"reports"`
	Messages int64  `json:"messages"`
	Pass     int64  `json:"pass"`
	Fail     int64  `json:"fail"`
	// Orgs are the reporting organisations of the day, by name.
	Orgs []DayOrg `json:"orgs"`
}

// DayOrg is one organisation's reports of one day.
type DayOrg struct {
	Org      string `json:"org"`
	Messages int64  `json:"messages"`
	Pass     int64  `json:"pass"`
	Fail     int64  `json:"fail"`
}

// MaxDays bounds a series (received reports are kept 400 days).
const MaxDays = 400

// fillDays is days (sorted) with the empty days between them, at most
// MaxDays (the latest): a report counts on the day of the middle of its
// period (dateOf: a day's report whose period runs from 22:00 to 22:00
// counts on the day it mostly covers), with its own totals (the
// tallies' Day).
func fillDays(days []Day) []Day {
	if len(days) == 0 {
		return []Day{}
	}
	first, _ := time.Parse(time.DateOnly, days[0].Date)
	last, _ := time.Parse(time.DateOnly, days[len(days)-1].Date)
	if n := int(last.Sub(first)/(24*time.Hour)) + 1; n > MaxDays {
		first = last.AddDate(0, 0, -(MaxDays - 1))
	}
	out := make([]Day, 0, int(last.Sub(first)/(24*time.Hour))+1)
	i := 0
	for t := first; !t.After(last); t = t.AddDate(0, 0, 1) {
		k := t.Format(time.DateOnly)
		for i < len(days) && days[i].Date < k {
			i++
		}
		if i < len(days) && days[i].Date == k {
			out = append(out, days[i])
			continue
		}
		out = append(out, Day{Date: k, Orgs: []DayOrg{}})
	}
	return out
}

// Alignment counts messages by which authentication passed aligned, as
// the reporters evaluated it (RFC 9989 4.7): the SPF and DKIM breakdown
// a domain owner reads to see what to fix.
type Alignment struct {
	Both     int64 `json:"both"`      // DKIM and SPF pass aligned
	DKIMOnly int64 `json:"dkim_only"` // DKIM only: SPF fails (a forwarder, a service not in the SPF record)
	SPFOnly  int64 `json:"spf_only"`  // SPF only: no aligned DKIM signature
	Neither  int64 `json:"neither"`   // DMARC fails
}

// add counts the messages of one record.
func (a *Alignment) add(r ReceivedRecord) {
	n := max(r.Row.Count, 0)
	dkim, spf := r.Row.PolicyEvaluated.DKIM == "pass", r.Row.PolicyEvaluated.SPF == "pass"
	switch {
	case dkim && spf:
		a.Both = addSat(a.Both, n)
	case dkim:
		a.DKIMOnly = addSat(a.DKIMOnly, n)
	case spf:
		a.SPFOnly = addSat(a.SPFOnly, n)
	default:
		a.Neither = addSat(a.Neither, n)
	}
}
