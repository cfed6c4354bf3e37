package dmarcreport

import (
	"sort"
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

// MaxDays bounds a series (a little over a year of received reports,
// which are kept 400 days).
const MaxDays = 400

// Daily adds up reports by UTC day: each report counts on the day of
// the middle of its period (a day's report whose period runs from 22:00
// to 22:00 counts on the day it mostly covers). The days between the
// first and the last are all there, empty ones with zeros, at most
// MaxDays (the latest). It reads the reports' totals, not their records.
func Daily(reps []Stored) []Day {
	type acc struct {
		day  Day
		orgs map[string]*DayOrg
	}
	days := map[string]*acc{}
	var first, last time.Time
	for _, s := range reps {
		r := s.Report
		if r == nil || r.DateRange.End < r.DateRange.Begin {
			continue
		}
		t := time.Unix(r.DateRange.Begin+(r.DateRange.End-r.DateRange.Begin)/2, 0).UTC().Truncate(24 * time.Hour)
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
		k := t.Format(time.DateOnly)
		a := days[k]
		if a == nil {
			a = &acc{day: Day{Date: k}, orgs: map[string]*DayOrg{}}
			days[k] = a
		}
		fail := min(max(r.FailCount, 0), r.MessageCount)
		pass := r.MessageCount - fail
		a.day.Reports++
		a.day.Messages = addSat(a.day.Messages, r.MessageCount)
		a.day.Pass = addSat(a.day.Pass, pass)
		a.day.Fail = addSat(a.day.Fail, fail)
		o := a.orgs[r.OrgName]
		if o == nil {
			o = &DayOrg{Org: r.OrgName}
			a.orgs[r.OrgName] = o
		}
		o.Messages = addSat(o.Messages, r.MessageCount)
		o.Pass = addSat(o.Pass, pass)
		o.Fail = addSat(o.Fail, fail)
	}
	if first.IsZero() {
		return []Day{}
	}
	if n := int(last.Sub(first)/(24*time.Hour)) + 1; n > MaxDays {
		first = last.AddDate(0, 0, -(MaxDays - 1))
	}
	var out []Day
	for t := first; !t.After(last); t = t.AddDate(0, 0, 1) {
		k := t.Format(time.DateOnly)
		a := days[k]
		if a == nil {
			out = append(out, Day{Date: k, Orgs: []DayOrg{}})
			continue
		}
		a.day.Orgs = make([]DayOrg, 0, len(a.orgs))
		for _, o := range a.orgs {
			a.day.Orgs = append(a.day.Orgs, *o)
		}
		sort.Slice(a.day.Orgs, func(i, j int) bool { return a.day.Orgs[i].Org < a.day.Orgs[j].Org })
		out = append(out, a.day)
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
