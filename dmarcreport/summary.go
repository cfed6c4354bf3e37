package dmarcreport

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"
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
	// Days is the daily series (Daily).
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
}

// PTRResolver names addresses.
type PTRResolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// MaxSources is how many sources a summary lists, failing ones first.
const MaxSources = 100

// Summarize adds up the received reports of domain whose period ends
// at since or later: per reporting organisation and per source IP, the
// sources that fail DMARC first, named by their PTR records (res may be
// nil). Memory grows with the distinct source addresses, not with the
// records.
func Summarize(ctx context.Context, st store.Store, res PTRResolver, domain string, since time.Time) (Summary, error) {
	reps, err := Reports(ctx, st, domain, since)
	if err != nil {
		return Summary{Domain: domain, Since: since.UTC()}, err
	}
	return SummarizeReports(ctx, st, res, domain, since, reps)
}

// SummarizeReports is Summarize of reports already read (Reports): one
// pass over their records gives the sources, the organisations and the
// alignment breakdown.
func SummarizeReports(ctx context.Context, st store.Store, res PTRResolver, domain string, since time.Time, reps []Stored) (Summary, error) {
	sum := Summary{Domain: domain, Since: since.UTC(), Orgs: []OrgSummary{}, Sources: []SourceSummary{}, Days: Daily(reps), Selectors: []string{}}
	orgs := map[string]*OrgSummary{}
	srcs := map[string]*SourceSummary{}
	addTo := func(list []string, v string) []string {
		for _, x := range list {
			if x == v {
				return list
			}
		}
		if len(list) < 5 {
			list = append(list, v)
		}
		return list
	}
	for _, s := range reps {
		sum.Reports++
		o := orgs[s.Report.OrgName]
		if o == nil {
			o = &OrgSummary{Org: s.Report.OrgName}
			orgs[s.Report.OrgName] = o
		}
		o.Reports++
		err := s.Records(ctx, st, func(r ReceivedRecord) error {
			n := r.Row.Count
			ip := r.Row.SourceIP
			if a, err := netip.ParseAddr(ip); err == nil {
				ip = a.Unmap().String()
			}
			src := srcs[ip]
			if src == nil {
				src = &SourceSummary{IP: ip, HeaderFrom: []string{}, Orgs: []string{}}
				srcs[ip] = src
			}
			src.Messages = addSat(src.Messages, n)
			o.Messages = addSat(o.Messages, n)
			sum.Messages = addSat(sum.Messages, n)
			if r.DMARCPass() {
				src.Pass, o.Pass, sum.Pass = addSat(src.Pass, n), addSat(o.Pass, n), addSat(sum.Pass, n)
			} else {
				src.Fail, o.Fail, sum.Fail = addSat(src.Fail, n), addSat(o.Fail, n), addSat(sum.Fail, n)
			}
			sum.Alignment.add(r)
			for _, d := range r.AuthResults.DKIM {
				if len(sum.Selectors) < MaxSelectors && d.Selector != "" && strings.EqualFold(strings.TrimSuffix(d.Domain, "."), domain) && !slices.Contains(sum.Selectors, d.Selector) {
					sum.Selectors = append(sum.Selectors, d.Selector)
				}
			}
			src.HeaderFrom = addTo(src.HeaderFrom, r.Identifiers.HeaderFrom)
			src.Orgs = addTo(src.Orgs, s.Report.OrgName)
			return nil
		})
		if err != nil {
			return sum, err
		}
	}
	for _, o := range orgs {
		sum.Orgs = append(sum.Orgs, *o)
	}
	sort.Slice(sum.Orgs, func(i, j int) bool {
		if sum.Orgs[i].Messages != sum.Orgs[j].Messages {
			return sum.Orgs[i].Messages > sum.Orgs[j].Messages
		}
		return sum.Orgs[i].Org < sum.Orgs[j].Org
	})
	for _, s := range srcs {
		sum.Sources = append(sum.Sources, *s)
	}
	// Failing sources first (most failed messages first), then the rest
	// by volume.
	sort.Slice(sum.Sources, func(i, j int) bool {
		a, b := sum.Sources[i], sum.Sources[j]
		if a.Fail != b.Fail {
			return a.Fail > b.Fail
		}
		if a.Messages != b.Messages {
			return a.Messages > b.Messages
		}
		return a.IP < b.IP
	})
	if len(sum.Sources) > MaxSources {
		sum.Sources = sum.Sources[:MaxSources]
	}
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
		return sum, err
	}
	sum.Sent = marks
	if sum.Sent == nil {
		sum.Sent = []store.ReportMark{}
	}
	return sum, nil
}
