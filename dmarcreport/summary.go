package dmarcreport

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/wehr/wehr/store"
)

// Summary is what the received reports say about one domain: who sends
// its mail, and which of those fail DMARC.
type Summary struct {
	Domain   string          `json:"domain"`
	Since    time.Time       `json:"since"`
	Reports  int             `json:"reports"`
	Messages int64           `json:"messages"`
	Pass     int64           `json:"pass"`
	Fail     int64           `json:"fail"`
	Orgs     []OrgSummary    `json:"orgs"`
	Sources  []SourceSummary `json:"sources"`
	// Sent lists the reports we sent about the domain.
	Sent []store.ReportMark `json:"sent"`
	// Alignment breaks the messages down by what passed aligned.
	Alignment Alignment `json:"alignment"`
	// Days is the daily series (fillDays).
	Days []Day `json:"days"`
	// Selectors are the DKIM selectors the reporters saw in the domain's
	// signatures (at most MaxSelectors), the keys worth checking.
	Selectors []string `json:"selectors"`
}

// MaxSelectors bounds Summary.Selectors: reporters write what the
// signatures said, and a forger signs with what he likes.
const MaxSelectors = 10

// OrgSummary counts one reporting organisation's reports.
type OrgSummary struct {
	Org      string `json:"org"`
	Reports  int    `json:"reports"`
	Messages int64  `json:"messages"`
	Pass     int64  `json:"pass"`
	Fail     int64  `json:"fail"`
}

// SourceSummary counts one sending IP address.
type SourceSummary struct {
	IP       string   `json:"ip"`
	PTR      []string `json:"ptr,omitempty"`
	Messages int64    `json:"messages"`
	Pass     int64    `json:"pass"`
	Fail     int64    `json:"fail"`
	// HeaderFrom and Orgs are the From domains it used and who reported
	// it (a few of each).
	HeaderFrom []string `json:"header_from"`
	Orgs       []string `json:"orgs"`
	// DKIM and SPF are the results the reporters saw for it (a few of
	// each): "example.com s=sel1 pass", "bulk.example fail". Aligned
	// or not is in Pass and Fail; these tell a forger (his own domain's
	// signature) from a service of the domain's own that signs for
	// itself or is missing from the SPF record.
	DKIM []string `json:"dkim"`
	SPF  []string `json:"spf"`
}

// PTRResolver names addresses.
type PTRResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// MaxSources is how many sources a summary lists, failing ones first.
const MaxSources = 100

// Summarize adds up the received reports of domain that count on the
// day of since or later (dateOf): per reporting organisation and per
// source IP, the sources that fail DMARC first, named by their PTR
// records (res may be nil). It reads the day tallies, not the records.
func Summarize(ctx context.Context, st store.Store, res PTRResolver, domain string, since time.Time) (Summary, error) {
	sum, _, err := Overview(ctx, st, res, domain, since, 0)
	return sum, err
}

// Overview is Summarize, and the lines of the latest n reports (by the
// start of their period, newest first).
func Overview(ctx context.Context, st store.Store, res PTRResolver, domain string, since time.Time, n int) (Summary, []ReportLine, error) {
	sum := Summary{Domain: domain, Since: since.UTC(), Orgs: []OrgSummary{}, Sources: []SourceSummary{}, Days: []Day{}, Selectors: []string{}}
	ts, err := tallies(ctx, st, domain)
	if err != nil {
		return sum, nil, err
	}
	from := since.UTC().Format(time.DateOnly)
	a := newAdder(domain)
	var days []Day
	for _, t := range ts {
		if t.Date < from {
			continue
		}
		a.tally(t)
		days = append(days, t.Day)
	}
	sum.Reports, sum.Messages, sum.Pass, sum.Fail = a.day.Reports, a.messages, a.pass, a.fail
	sum.Orgs, sum.Sources, sum.Alignment, sum.Selectors = a.orgList(), a.sourceList(MaxSources), a.alignment, a.selectors
	sum.Days = fillDays(days)
	lines := a.lines
	sort.Slice(lines, func(i, j int) bool {
		if lines[i].Begin != lines[j].Begin {
			return lines[i].Begin > lines[j].Begin
		}
		return lines[i].ID < lines[j].ID
	})
	lines = lines[:min(len(lines), n)]
	if res != nil {
		// Sixteen at a time, each within 3 s: a page of a hundred
		// sources does not wait for a hundred lookups in a row.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range sum.Sources {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if names, err := res.LookupAddr(ctx, sum.Sources[i].IP); err == nil {
					sum.Sources[i].PTR = names
				}
			}()
		}
		wg.Wait()
	}
	marks, err := store.NewReportMarks(st).List(ctx, domain)
	if err != nil {
		return sum, nil, err
	}
	sum.Sent = marks
	if sum.Sent == nil {
		sum.Sent = []store.ReportMark{}
	}
	return sum, lines, nil
}

// Totals adds up the reports' own totals of domain's days from since's
// on (the day tallies, without reading a record or naming a source):
// what a list of domains shows.
func Totals(ctx context.Context, st store.Store, domain string, since time.Time) (Day, error) {
	ts, err := tallies(ctx, st, domain)
	if err != nil {
		return Day{}, err
	}
	from := since.UTC().Format(time.DateOnly)
	var sum Day
	for _, t := range ts {
		if t.Date >= from {
			sum.Reports += t.Day.Reports
			sum.Messages, sum.Pass, sum.Fail = addSat(sum.Messages, t.Day.Messages), addSat(sum.Pass, t.Day.Pass), addSat(sum.Fail, t.Day.Fail)
		}
	}
	return sum, nil
}
