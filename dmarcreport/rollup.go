package dmarcreport

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wehr/wehr/store"
)

// A tally is one UTC day of a domain's received reports added up: what
// the domain's summary and page show. Tallies are kept in the store, so
// a summary of a year reads about 365 values instead of every record of
// 18,000 reports. Ingest adds each new report to its day's tally; a
// tally names the reports it counts, and one that names a report no
// longer stored, or misses one (two ingests raced, an ingest stopped
// between the report and its tally, reports stored before tallies
// existed), is made again from the reports themselves the next time it
// is read. So the tallies are a cache of the reports, never a second
// truth.
type tally struct {
	Date string `json:"date"` // YYYY-MM-DD, the day of the middle of each report's period (dateOf)
	// Lines are the reports counted, for the list of reports.
	Lines []ReportLine `json:"lines"`
	// Day is the day's figures from the reports' own totals (fillDays).
	Day Day `json:"day"`
	// The rest is from the records.
	Messages  int64           `json:"messages"`
	Pass      int64           `json:"pass"`
	Fail      int64           `json:"fail"`
	Orgs      []OrgSummary    `json:"orgs"`
	Sources   []SourceSummary `json:"sources"`
	Alignment Alignment       `json:"alignment"`
	Selectors []string        `json:"selectors"`
}

// ids are the reports t counts.
func (t tally) ids() []string {
	out := make([]string, len(t.Lines))
	for i, l := range t.Lines {
		out[i] = l.ID
	}
	return out
}

// counts says whether t counts the report id.
func (t tally) counts(id string) bool {
	return slices.ContainsFunc(t.Lines, func(l ReportLine) bool { return l.ID == id })
}

// decodeTally is a stored day's tally; false for one that does not read
// or is not the day its key says.
func decodeTally(d store.StoredDay) (tally, bool) {
	var t tally
	if err := json.Unmarshal(d.Value, &t); err != nil || t.Date != d.Date {
		return tally{}, false
	}
	return t, true
}

// ReportLine is one received report in a list.
type ReportLine struct {
	ID       string `json:"id"`
	Org      string `json:"org"`
	ReportID string `json:"report_id"`
	Begin    int64  `json:"begin"`
	End      int64  `json:"end"`
	Messages int64  `json:"messages"`
	Fail     int64  `json:"fail"`
}

// maxDaySources bounds the sources a tally keeps (failing ones first),
// and twice that the sources an adder holds while it adds: a day of a
// domain a botnet forges can name more addresses than anyone reads.
// The totals stay exact; past the bound, the list of sources is the
// ones that failed most where they were counted, not over the year.
const maxDaySources = 2000

// dateOf is the day a report counts on (the middle of its period), false for a report
// whose period ends before it begins.
func dateOf(r *Report) (string, bool) {
	if r == nil || r.DateRange.End < r.DateRange.Begin {
		return "", false
	}
	t := time.Unix(r.DateRange.Begin+(r.DateRange.End-r.DateRange.Begin)/2, 0).UTC()
	return t.Format(time.DateOnly), true
}

// adder adds reports, records and tallies up.
type adder struct {
	domain    string
	lines     []ReportLine
	day       Day
	dayOrgs   map[string]*DayOrg
	messages  int64
	pass      int64
	fail      int64
	orgs      map[string]*OrgSummary
	srcs      map[string]*SourceSummary
	alignment Alignment
	selectors []string
	pending   [][2]string // DKIM domain and selector, before settle
}

func newAdder(domain string) *adder {
	return &adder{domain: domain, dayOrgs: map[string]*DayOrg{}, orgs: map[string]*OrgSummary{},
		srcs: map[string]*SourceSummary{}, selectors: []string{}}
}

func (a *adder) org(name string) *OrgSummary {
	o := a.orgs[name]
	if o == nil {
		o = &OrgSummary{Org: name}
		a.orgs[name] = o
	}
	return o
}

func (a *adder) source(ip string) *SourceSummary {
	s := a.srcs[ip]
	if s == nil {
		if len(a.srcs) >= 2*maxDaySources {
			a.prune()
		}
		s = &SourceSummary{IP: ip, HeaderFrom: []string{}, Orgs: []string{}, DKIM: []string{}, SPF: []string{}}
		a.srcs[ip] = s
	}
	return s
}

// addTo adds v to a short list of distinct values (at most 5).
func addTo(list []string, v string) []string {
	if len(list) >= 5 || slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}

func (a *adder) selector(s string) {
	if len(a.selectors) < MaxSelectors && s != "" && !slices.Contains(a.selectors, s) {
		a.selectors = append(a.selectors, s)
	}
}

func (a *adder) dayOrg(name string) *DayOrg {
	o := a.dayOrgs[name]
	if o == nil {
		o = &DayOrg{Org: name}
		a.dayOrgs[name] = o
	}
	return o
}

// report counts a report: its line, its totals on the day, its org.
func (a *adder) report(id string, r *Report) {
	a.lines = append(a.lines, ReportLine{ID: id, Org: r.OrgName, ReportID: r.ReportID, Begin: r.DateRange.Begin,
		End: r.DateRange.End, Messages: r.MessageCount, Fail: r.FailCount})
	a.org(r.OrgName).Reports++
	fail := min(max(r.FailCount, 0), r.MessageCount)
	pass := r.MessageCount - fail
	a.day.Reports++
	a.day.Messages = addSat(a.day.Messages, r.MessageCount)
	a.day.Pass = addSat(a.day.Pass, pass)
	a.day.Fail = addSat(a.day.Fail, fail)
	o := a.dayOrg(r.OrgName)
	o.Messages = addSat(o.Messages, r.MessageCount)
	o.Pass = addSat(o.Pass, pass)
	o.Fail = addSat(o.Fail, fail)
}

// record counts one record of a report of org.
func (a *adder) record(org string, r ReceivedRecord) {
	n := r.Row.Count
	ip := r.Row.SourceIP
	if x, err := netip.ParseAddr(ip); err == nil {
		ip = x.Unmap().String()
	}
	src, o := a.source(ip), a.org(org)
	src.Messages = addSat(src.Messages, n)
	o.Messages = addSat(o.Messages, n)
	a.messages = addSat(a.messages, n)
	if r.DMARCPass() {
		src.Pass, o.Pass, a.pass = addSat(src.Pass, n), addSat(o.Pass, n), addSat(a.pass, n)
	} else {
		src.Fail, o.Fail, a.fail = addSat(src.Fail, n), addSat(o.Fail, n), addSat(a.fail, n)
	}
	a.alignment.add(r)
	for _, d := range r.AuthResults.DKIM {
		dom := strings.TrimSuffix(d.Domain, ".")
		switch {
		case a.domain == "":
			// The policy domain is not known yet (settle).
			if d.Selector != "" && len(a.pending) < 4*MaxSelectors && !slices.Contains(a.pending, [2]string{dom, d.Selector}) {
				a.pending = append(a.pending, [2]string{dom, d.Selector})
			}
		case strings.EqualFold(dom, a.domain):
			a.selector(d.Selector)
		}
	}
	src.HeaderFrom = addTo(src.HeaderFrom, r.Identifiers.HeaderFrom)
	src.Orgs = addTo(src.Orgs, org)
	for _, d := range r.AuthResults.DKIM {
		v := clipWord(d.Domain)
		if d.Selector != "" {
			v += " s=" + clipWord(d.Selector)
		}
		src.DKIM = addTo(src.DKIM, v+" "+clipWord(d.Result))
	}
	for _, x := range r.AuthResults.SPF {
		src.SPF = addTo(src.SPF, clipWord(x.Domain)+" "+clipWord(x.Result))
	}
}

// clipWord bounds what a reporter wrote to 64 bytes (a DNS label's
// length and some), on a rune boundary.
func clipWord(s string) string {
	if len(s) <= 64 {
		return s
	}
	s = s[:64]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// settle names the organisation and the policy domain of one report
// whose records were counted before its metadata was known.
func (a *adder) settle(name, domain string) {
	a.domain = domain
	for _, p := range a.pending {
		if strings.EqualFold(p[0], domain) {
			a.selector(p[1])
		}
	}
	a.pending = nil
	if o := a.orgs[""]; o != nil {
		delete(a.orgs, "")
		o.Org = name
		a.orgs[name] = o
	}
	for _, s := range a.srcs {
		for i, v := range s.Orgs {
			if v == "" {
				s.Orgs[i] = name
			}
		}
	}
}

// tally adds a day's tally: what it counted is counted again here.
func (a *adder) tally(t tally) {
	a.lines = append(a.lines, t.Lines...)
	a.day.Reports += t.Day.Reports
	a.day.Messages = addSat(a.day.Messages, t.Day.Messages)
	a.day.Pass = addSat(a.day.Pass, t.Day.Pass)
	a.day.Fail = addSat(a.day.Fail, t.Day.Fail)
	for _, x := range t.Day.Orgs {
		o := a.dayOrg(x.Org)
		o.Messages, o.Pass, o.Fail = addSat(o.Messages, x.Messages), addSat(o.Pass, x.Pass), addSat(o.Fail, x.Fail)
	}
	a.messages, a.pass, a.fail = addSat(a.messages, t.Messages), addSat(a.pass, t.Pass), addSat(a.fail, t.Fail)
	for _, x := range t.Orgs {
		o := a.org(x.Org)
		o.Reports += x.Reports
		o.Messages, o.Pass, o.Fail = addSat(o.Messages, x.Messages), addSat(o.Pass, x.Pass), addSat(o.Fail, x.Fail)
	}
	for _, x := range t.Sources {
		s := a.source(x.IP)
		s.Messages, s.Pass, s.Fail = addSat(s.Messages, x.Messages), addSat(s.Pass, x.Pass), addSat(s.Fail, x.Fail)
		for _, v := range x.HeaderFrom {
			s.HeaderFrom = addTo(s.HeaderFrom, v)
		}
		for _, v := range x.Orgs {
			s.Orgs = addTo(s.Orgs, v)
		}
		for _, v := range x.DKIM {
			s.DKIM = addTo(s.DKIM, v)
		}
		for _, v := range x.SPF {
			s.SPF = addTo(s.SPF, v)
		}
	}
	a.alignment.Both = addSat(a.alignment.Both, t.Alignment.Both)
	a.alignment.DKIMOnly = addSat(a.alignment.DKIMOnly, t.Alignment.DKIMOnly)
	a.alignment.SPFOnly = addSat(a.alignment.SPFOnly, t.Alignment.SPFOnly)
	a.alignment.Neither = addSat(a.alignment.Neither, t.Alignment.Neither)
	for _, s := range t.Selectors {
		a.selector(s)
	}
}

// orgList is the organisations, most messages first.
func (a *adder) orgList() []OrgSummary {
	out := make([]OrgSummary, 0, len(a.orgs))
	for _, o := range a.orgs {
		out = append(out, *o)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Messages != out[j].Messages {
			return out[i].Messages > out[j].Messages
		}
		return out[i].Org < out[j].Org
	})
	return out
}

// prune keeps the first maxDaySources sources (sourceList): memory
// stays bounded whatever number of addresses the reports name.
func (a *adder) prune() {
	keep := a.sourceList(maxDaySources)
	clear(a.srcs)
	for i := range keep {
		a.srcs[keep[i].IP] = &keep[i]
	}
}

// sourceList is the first n sources: failing ones first (most failed
// messages first), then the rest by volume.
func (a *adder) sourceList(n int) []SourceSummary {
	out := make([]SourceSummary, 0, len(a.srcs))
	for _, s := range a.srcs {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if x.Fail != y.Fail {
			return x.Fail > y.Fail
		}
		if x.Messages != y.Messages {
			return x.Messages > y.Messages
		}
		return x.IP < y.IP
	})
	return out[:min(len(out), n)]
}

// result is the day's tally.
func (a *adder) result(date string) tally {
	a.day.Date = date
	a.day.Orgs = make([]DayOrg, 0, len(a.dayOrgs))
	for _, o := range a.dayOrgs {
		a.day.Orgs = append(a.day.Orgs, *o)
	}
	sort.Slice(a.day.Orgs, func(i, j int) bool { return a.day.Orgs[i].Org < a.day.Orgs[j].Org })
	return tally{Date: date, Lines: a.lines, Day: a.day, Messages: a.messages, Pass: a.pass, Fail: a.fail,
		Orgs: a.orgList(), Sources: a.sourceList(maxDaySources), Alignment: a.alignment, Selectors: a.selectors}
}

// addReport adds a report just stored, of day date, whose records one
// counted, to its day's tally, then to the domain's generation. Two
// ingests adding to one day at once can lose one of the two: a reader
// that sees the new generation finds the report missing from its day,
// and makes the day again. The domain's first report is the time to
// check the tallies against every report, those stored before tallies
// existed included, once, so that no page has to.
func addReport(ctx context.Context, st store.Store, domain, id, date string, one *adder) error {
	rr := store.NewReceivedReports(st, ReceivedKeep)
	err := addToDay(ctx, rr, domain, one.result(date))
	gen, berr := rr.Bump(ctx, domain, id, date)
	if err == nil {
		err = berr
	}
	if gen == 1 {
		if _, cerr := tallies(ctx, st, domain); err == nil {
			err = cerr
		}
	}
	return err
}

// addToDay adds t, the tally of one report, to its day's tally.
func addToDay(ctx context.Context, rr store.ReceivedReports, domain string, t tally) error {
	b, ok, err := rr.Day(ctx, domain, t.Date)
	if err != nil {
		return err
	}
	if ok {
		old, ok := decodeTally(store.StoredDay{Date: t.Date, Value: b})
		if !ok {
			return nil // made again when read
		}
		if old.counts(t.Lines[0].ID) {
			return nil
		}
		a := newAdder(domain)
		a.tally(old)
		a.tally(t)
		t = a.result(t.Date)
	}
	return putTally(ctx, rr, domain, t)
}

// putTally stores t; a tally of no report removes its day.
func putTally(ctx context.Context, rr store.ReceivedReports, domain string, t tally) error {
	var b []byte
	if len(t.Lines) > 0 {
		var err error
		if b, err = json.Marshal(t); err != nil {
			return err
		}
	}
	return rr.PutDay(ctx, domain, t.Date, b)
}

// tallies returns domain's tallies, oldest first, agreeing with the
// stored reports: a day that misses a report is made again from the
// reports' records, and stored. A report that expired (400 days after
// it came, past what a page shows) leaves its day's tally at the next
// full check.
func tallies(ctx context.Context, st store.Store, domain string) ([]tally, error) {
	rr := store.NewReceivedReports(st, ReceivedKeep)
	// No report stored since the tallies were last checked: they are
	// read without listing the reports (a key scan, the costly part
	// with Redis). A report that expired meanwhile is older than any
	// page shows.
	gen, checked, wasChecked, err := rr.Generation(ctx, domain)
	if err != nil {
		return nil, err
	}
	if wasChecked && checked.Generation <= gen && gen-checked.Generation <= maxLogged {
		ts, ok, err := storedTallies(ctx, rr, domain)
		if err != nil {
			return nil, err
		}
		// A tally gone (evicted from Redis, expired) is found by the
		// count of days; a day only goes when it is a year past.
		ok = ok && len(ts) >= checked.Days
		if ok && checked.Generation == gen && len(ts) == checked.Days {
			return ts, nil
		}
		if ok {
			if ts, ok, err = newlyStored(ctx, st, rr, domain, ts, checked.Generation, gen); err != nil || ok {
				if err == nil {
					rr.SetChecked(ctx, domain, store.Checked{Generation: gen, Days: len(ts)}) //nolint:errcheck
				}
				return ts, err
			}
		}
	}
	ts, err := checkedTallies(ctx, st, rr, domain)
	if err != nil {
		return nil, err
	}
	// gen was read before the reports were listed: a report stored
	// since has bumped it past gen, and the next read checks it.
	// Not noting the check costs the next read a check, nothing more.
	rr.SetChecked(ctx, domain, store.Checked{Generation: gen, Days: len(ts)}) //nolint:errcheck
	return ts, nil
}

// maxLogged bounds the reports stored since the last check that are
// checked one by one; past it, every report is.
const maxLogged = 250

// newlyStored checks that each report stored after generation from,
// up to to, is in its day's tally, and makes again the days where one
// is not; false if a report's generation is not known any more.
func newlyStored(ctx context.Context, st store.Store, rr store.ReceivedReports, domain string, ts []tally, from, to int64) ([]tally, bool, error) {
	byDate := make(map[string]int, len(ts))
	for i, t := range ts {
		byDate[t.Date] = i
	}
	latest, err := rr.Latest(ctx, domain)
	if err != nil {
		return nil, false, err
	}
	missing := map[string][]string{}
	for g := from + 1; g <= to; g++ {
		x, ok := latest[g]
		if !ok {
			return nil, false, nil
		}
		id, date := x[0], x[1]
		if i, ok := byDate[date]; ok && ts[i].counts(id) {
			continue
		}
		missing[date] = append(missing[date], id)
	}
	for date, ids := range missing {
		i, had := byDate[date]
		if had {
			ids = append(ids, ts[i].ids()...)
		}
		t, err := remakeDay(ctx, st, rr, domain, date, ids)
		if err != nil {
			return nil, false, err
		}
		if had {
			ts[i] = t
		} else {
			byDate[date] = len(ts)
			ts = append(ts, t)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Date < ts[j].Date })
	return ts, true, nil
}

// storedTallies reads domain's tallies as stored; false if one of them
// does not read (then they are checked).
func storedTallies(ctx context.Context, rr store.ReceivedReports, domain string) ([]tally, bool, error) {
	days, err := rr.Days(ctx, domain)
	if err != nil {
		return nil, false, err
	}
	out := make([]tally, 0, len(days))
	for _, d := range days {
		t, ok := decodeTally(d)
		if !ok {
			return nil, false, nil
		}
		out = append(out, t)
	}
	return out, true, nil
}

// checkedTallies is tallies the long way: every one checked against
// the stored reports.
func checkedTallies(ctx context.Context, st store.Store, rr store.ReceivedReports, domain string) ([]tally, error) {
	ids, err := rr.IDs(ctx, domain)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	days, err := rr.Days(ctx, domain)
	if err != nil {
		return nil, err
	}
	good := map[string]tally{}
	stale := map[string]bool{}
	members := map[string][]string{} // date: the stored reports known to be of that day
	covered := make(map[string]bool, len(ids))
	for _, d := range days {
		t, ok := decodeTally(d)
		if !ok {
			stale[d.Date] = true
			continue
		}
		for _, id := range t.ids() {
			if !have[id] || covered[id] {
				ok = false
				continue
			}
			covered[id] = true
			members[d.Date] = append(members[d.Date], id)
		}
		if ok {
			good[d.Date] = t
		} else {
			stale[d.Date] = true
		}
	}
	// The reports no tally counts: their day is made again.
	for _, id := range ids {
		if covered[id] {
			continue
		}
		s, ok, err := FindIn(ctx, st, domain, id)
		if err != nil {
			return nil, err
		}
		date, dated := "", false
		if ok {
			date, dated = dateOf(s.Report)
		}
		if !dated {
			continue
		}
		delete(good, date)
		stale[date] = true
		members[date] = append(members[date], id)
	}
	for date := range stale {
		t, err := remakeDay(ctx, st, rr, domain, date, members[date])
		if err != nil {
			return nil, err
		}
		if len(t.Lines) > 0 {
			good[date] = t
		}
	}
	out := make([]tally, 0, len(good))
	for _, t := range good {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Date < out[j].Date })
	return out, nil
}

// remakeDay makes the tally of domain's reports ids, of day date, again
// from their records, and stores it.
func remakeDay(ctx context.Context, st store.Store, rr store.ReceivedReports, domain, date string, ids []string) (tally, error) {
	t, err := makeDay(ctx, st, domain, date, ids)
	if err != nil {
		return tally{}, err
	}
	return t, putTally(ctx, rr, domain, t)
}

// makeDay is the tally of domain's reports ids, of day date, from their
// records.
func makeDay(ctx context.Context, st store.Store, domain, date string, ids []string) (tally, error) {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	a := newAdder(domain)
	for _, id := range ids {
		s, ok, err := FindIn(ctx, st, domain, id)
		if err != nil {
			return tally{}, err
		}
		if d, dated := dateOf(s.Report); !ok || !dated || d != date {
			continue
		}
		a.report(s.ID, s.Report)
		if err := s.Records(ctx, st, func(r ReceivedRecord) error {
			a.record(s.Report.OrgName, r)
			return nil
		}); err != nil {
			return tally{}, fmt.Errorf("dmarcreport: adding up %s of %s: %w", id, date, err)
		}
	}
	return a.result(date), nil
}

// Generation counts the reports of domain stored so far (it changes
// with every new one): what a cache of a summary is keyed by.
func Generation(ctx context.Context, st store.Store, domain string) (int64, error) {
	gen, _, _, err := store.NewReceivedReports(st, ReceivedKeep).Generation(ctx, domain)
	return gen, err
}
