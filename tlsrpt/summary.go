package tlsrpt

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/wehr/wehr/store"
)

// DomainSummary is what the received TLS reports say about one domain: how
// many sessions reached its MX hosts with TLS, and what went wrong with
// the others.
type DomainSummary struct {
	Domain     string    `json:"domain"`
	Since      time.Time `json:"since"`
	Reports    int       `json:"reports"`
	Successful int64     `json:"successful"`
	Failed     int64     `json:"failed"`
	// Policies are the policies the reporters applied (sts, tlsa,
	// no-policy-found), the one with the most failures first.
	Policies []PolicySummary `json:"policies"`
	// Failures are the kinds of failure, by result type and receiving
	// MX, the most sessions first.
	Failures []FailureSummary `json:"failures"`
	Orgs     []OrgSummary     `json:"orgs"`
	// Days is the daily series of sessions (Daily).
	Days []Day `json:"days"`
}

// PolicySummary counts the sessions of one policy as reporters saw it.
type PolicySummary struct {
	Type       string   `json:"type"`
	Mode       string   `json:"mode,omitempty"` // an MTA-STS policy's mode
	MXHost     []string `json:"mx_host,omitempty"`
	Reports    int      `json:"reports"`
	Successful int64    `json:"successful"`
	Failed     int64    `json:"failed"`
}

// FailureSummary counts one kind of failure at one MX host.
type FailureSummary struct {
	ResultType string `json:"result_type"`
	MX         string `json:"receiving_mx,omitempty"`
	Sessions   int64  `json:"sessions"`
	// SendingIPs and Orgs are a few of the senders and reporters that
	// saw it.
	SendingIPs []string `json:"sending_ips"`
	Orgs       []string `json:"orgs"`
	// Info is one reporter's additional-information or reason code.
	Info string `json:"info,omitempty"`
}

// OrgSummary counts one reporting organisation's reports.
type OrgSummary struct {
	Org        string `json:"org"`
	Reports    int    `json:"reports"`
	Successful int64  `json:"successful"`
	Failed     int64  `json:"failed"`
}

// MaxFailures is how many kinds of failure a summary lists.
const MaxFailures = 100

// addSat adds without overflowing: counts come from reporters.
func addSat(a, b int64) int64 {
	if s := a + b; s >= a {
		return s
	}
	return 1<<63 - 1
}

func addTo(list []string, v string) []string {
	if v == "" {
		return list
	}
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

// Summarize adds up the received TLS reports of domain whose period
// ends at since or later.
func Summarize(ctx context.Context, st store.Store, domain string, since time.Time) (DomainSummary, error) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	sum := DomainSummary{Domain: domain, Since: since.UTC(), Policies: []PolicySummary{}, Failures: []FailureSummary{}, Orgs: []OrgSummary{}, Days: []Day{}}
	reps, err := Reports(ctx, st, domain, since)
	if err != nil {
		return sum, err
	}
	sum.Days = Daily(reps)
	pols := map[string]*PolicySummary{}
	fails := map[string]*FailureSummary{}
	orgs := map[string]*OrgSummary{}
	for _, s := range reps {
		sum.Reports++
		o := orgs[s.Report.OrganizationName]
		if o == nil {
			o = &OrgSummary{Org: s.Report.OrganizationName}
			orgs[s.Report.OrganizationName] = o
		}
		o.Reports++
		for _, p := range s.Report.Policies {
			ok, bad := p.Summary.Successful, p.Summary.Failed
			sum.Successful, sum.Failed = addSat(sum.Successful, ok), addSat(sum.Failed, bad)
			o.Successful, o.Failed = addSat(o.Successful, ok), addSat(o.Failed, bad)
			mode := policyMode(p.Policy)
			key := p.Policy.Type + "\x00" + mode + "\x00" + strings.Join(p.Policy.MXHost, ",")
			ps := pols[key]
			if ps == nil {
				ps = &PolicySummary{Type: p.Policy.Type, Mode: mode, MXHost: p.Policy.MXHost}
				pols[key] = ps
			}
			ps.Reports++
			ps.Successful, ps.Failed = addSat(ps.Successful, ok), addSat(ps.Failed, bad)
			for _, f := range p.FailureDetails {
				mx := strings.ToLower(strings.TrimSuffix(f.ReceivingMXHostname, "."))
				k := f.ResultType + "\x00" + mx
				fs := fails[k]
				if fs == nil {
					if len(fails) >= 10*MaxFailures {
						continue
					}
					fs = &FailureSummary{ResultType: f.ResultType, MX: mx, SendingIPs: []string{}, Orgs: []string{}}
					fails[k] = fs
				}
				fs.Sessions = addSat(fs.Sessions, f.FailedSessionCount)
				fs.SendingIPs = addTo(fs.SendingIPs, f.SendingMTAIP)
				fs.Orgs = addTo(fs.Orgs, s.Report.OrganizationName)
				if fs.Info == "" {
					fs.Info = clip(firstOf(f.FailureReasonCode, f.AdditionalInformation))
				}
			}
		}
	}
	for _, p := range pols {
		sum.Policies = append(sum.Policies, *p)
	}
	sort.Slice(sum.Policies, func(i, j int) bool {
		a, b := sum.Policies[i], sum.Policies[j]
		if a.Failed != b.Failed {
			return a.Failed > b.Failed
		}
		if a.Successful != b.Successful {
			return a.Successful > b.Successful
		}
		return a.Type+a.Mode < b.Type+b.Mode
	})
	for _, f := range fails {
		sum.Failures = append(sum.Failures, *f)
	}
	sort.Slice(sum.Failures, func(i, j int) bool {
		a, b := sum.Failures[i], sum.Failures[j]
		if a.Sessions != b.Sessions {
			return a.Sessions > b.Sessions
		}
		return a.ResultType+a.MX < b.ResultType+b.MX
	})
	if len(sum.Failures) > MaxFailures {
		sum.Failures = sum.Failures[:MaxFailures]
	}
	for _, o := range orgs {
		sum.Orgs = append(sum.Orgs, *o)
	}
	sort.Slice(sum.Orgs, func(i, j int) bool {
		a, b := sum.Orgs[i], sum.Orgs[j]
		if a.Successful+a.Failed != b.Successful+b.Failed {
			return a.Successful+a.Failed > b.Successful+b.Failed
		}
		return a.Org < b.Org
	})
	return sum, nil
}

// policyMode is the mode line of an MTA-STS policy string.
func policyMode(p Policy) string {
	for _, l := range p.String {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "mode" {
			return clip(strings.TrimSpace(v))
		}
	}
	return ""
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// Day is one UTC day of a domain's TLS reports.
type Day struct {
	Date       string `json:"date"` // YYYY-MM-DD
	Reports    int    `json:"reports"`
	Successful int64  `json:"successful"`
	Failed     int64  `json:"failed"`
}

// MaxDays bounds Daily's series (reports are kept 400 days).
const MaxDays = 400

// Daily adds up reports by the UTC day their period starts on, every
// day between the first and the last there (at most MaxDays, the
// latest).
func Daily(reps []Stored) []Day {
	days := map[string]*Day{}
	var first, last time.Time
	for _, s := range reps {
		t := s.Report.DateRange.Start.UTC().Truncate(24 * time.Hour)
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if t.After(last) {
			last = t
		}
		k := t.Format(time.DateOnly)
		d := days[k]
		if d == nil {
			d = &Day{Date: k}
			days[k] = d
		}
		ok, bad := s.Totals()
		d.Reports++
		d.Successful, d.Failed = addSat(d.Successful, ok), addSat(d.Failed, bad)
	}
	out := []Day{}
	if first.IsZero() {
		return out
	}
	if last.Sub(first)/(24*time.Hour)+1 > MaxDays {
		first = last.AddDate(0, 0, -(MaxDays - 1))
	}
	for t := first; !t.After(last); t = t.AddDate(0, 0, 1) {
		k := t.Format(time.DateOnly)
		if d := days[k]; d != nil {
			out = append(out, *d)
		} else {
			out = append(out, Day{Date: k})
		}
	}
	return out
}
