package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// ReportRows owns the rows of the DMARC aggregate reports we owe
// (package dmarcreport makes them): per policy domain and UTC hour, a
// count per distinct row, which every MX node adds to atomically.
//
//	rrow:DOMAIN:YYYYMMDDHH:KEY   Counters [count]
//	rdef:KEY                     the row itself (JSON), written once
//
// Unlike greylisting, this state does not rebuild itself: it is what
// the reports are built from.
type ReportRows struct {
	st   Store
	keep time.Duration
}

// ReportRowsKeep is how long rows are kept: past any reporting period
// and the retries of sending it.
const ReportRowsKeep = 15 * 24 * time.Hour

// NewReportRows is the report rows in st.
func NewReportRows(st Store) ReportRows { return ReportRows{st: st, keep: ReportRowsKeep} }

const hourLayout = "2006010215"

// Add counts n messages of the row key (whose content is def) for
// domain in the UTC hour of at. The definition is written first, so a
// count never exists without its row; a nil def says the caller wrote
// it already (within the last day).
func (r ReportRows) Add(ctx context.Context, domain string, at time.Time, key string, def []byte, n int64) error {
	if strings.ContainsAny(domain, ": ") || strings.ContainsAny(key, ": ") {
		return fmt.Errorf("store: report row: bad domain %q or key %q", domain, key)
	}
	if def != nil {
		if err := r.st.Set(ctx, "rdef:"+key, def, r.keep); err != nil {
			return err
		}
	}
	_, err := r.st.Counters(ctx, "rrow:"+strings.ToLower(domain)+":"+at.UTC().Format(hourLayout)+":"+key, []int64{n}, r.keep)
	return err
}

// StoredRow is a row as the store holds it.
type StoredRow struct {
	Hour  time.Time
	Key   string
	Def   []byte
	Count int64
}

// Rows returns the rows of domain in the hours [from, to), oldest first.
func (r ReportRows) Rows(ctx context.Context, domain string, from, to time.Time) ([]StoredRow, error) {
	keys, err := r.st.Scan(ctx, "rrow:"+strings.ToLower(domain)+":", 0)
	if err != nil {
		return nil, err
	}
	var out []StoredRow
	defs := map[string][]byte{}
	for _, k := range keys {
		parts := strings.Split(k, ":")
		if len(parts) != 4 {
			continue
		}
		hour, err := time.Parse(hourLayout, parts[2])
		if err != nil || hour.Before(from.UTC().Truncate(time.Hour)) || !hour.Before(to) {
			continue
		}
		c, err := r.st.Counters(ctx, k, nil, 0)
		if err != nil {
			return nil, err
		}
		if len(c) == 0 || c[0] == 0 {
			continue
		}
		def, ok := defs[parts[3]]
		if !ok {
			if def, ok, err = r.st.Get(ctx, "rdef:"+parts[3]); err != nil {
				return nil, err
			} else if !ok {
				return nil, fmt.Errorf("store: report row %s has no definition", k)
			}
			defs[parts[3]] = def
		}
		out = append(out, StoredRow{Hour: hour, Key: parts[3], Def: def, Count: c[0]})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Hour.Equal(out[j].Hour) {
			return out[i].Hour.Before(out[j].Hour)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// Domains lists the policy domains that have rows.
func (r ReportRows) Domains(ctx context.Context) ([]string, error) {
	keys, err := r.st.Scan(ctx, "rrow:", 0)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if parts := strings.Split(k, ":"); len(parts) == 4 {
			seen[parts[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out, nil
}

// ReportMarks owns what became of each report we owe: one mark per
// (policy domain, period, destination), written only after the relay
// accepted the report (or refused it for good), so that a report
// without a mark is sent again, with the same report id.
//
//	rsent:DOMAIN:BEGINUNIX:ADDRESS   the mark (JSON)
type ReportMarks struct{ st Store }

// NewReportMarks is the report marks in st.
func NewReportMarks(st Store) ReportMarks { return ReportMarks{st: st} }

// ReportMark is what became of one report to one destination.
type ReportMark struct {
	Domain   string    `json:"domain"`
	Begin    time.Time `json:"begin"`
	Address  string    `json:"address"`
	ReportID string    `json:"report_id"`
	Status   string    `json:"status"` // sent, refused, suppressed, too_large
	Detail   string    `json:"detail,omitempty"`
	At       time.Time `json:"at"`
	Size     int       `json:"size,omitempty"`
	Token    int64     `json:"token,omitempty"` // the sender's fencing token
}

func markKey(domain string, begin time.Time, addr string) string {
	return "rsent:" + strings.ToLower(domain) + ":" + fmt.Sprint(begin.Unix()) + ":" + strings.ToLower(addr)
}

// Get returns the mark of a report, if there is one.
func (m ReportMarks) Get(ctx context.Context, domain string, begin time.Time, addr string) (ReportMark, bool, error) {
	b, ok, err := m.st.Get(ctx, markKey(domain, begin, addr))
	if err != nil || !ok {
		return ReportMark{}, false, err
	}
	var r ReportMark
	if err := json.Unmarshal(b, &r); err != nil {
		return ReportMark{}, false, fmt.Errorf("store: report mark %s: %w", markKey(domain, begin, addr), err)
	}
	return r, true, nil
}

// Put writes a mark; it is kept as long as the rows.
func (m ReportMarks) Put(ctx context.Context, r ReportMark) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return m.st.Set(ctx, markKey(r.Domain, r.Begin, r.Address), b, ReportRowsKeep)
}

// List returns the marks of domain ("" for all), oldest period first.
func (m ReportMarks) List(ctx context.Context, domain string) ([]ReportMark, error) {
	prefix := "rsent:"
	if domain != "" {
		prefix += strings.ToLower(domain) + ":"
	}
	keys, err := m.st.Scan(ctx, prefix, 0)
	if err != nil {
		return nil, err
	}
	var out []ReportMark
	for _, k := range keys {
		b, ok, err := m.st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		var r ReportMark
		if !ok || json.Unmarshal(b, &r) != nil {
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Begin.Equal(out[j].Begin) {
			return out[i].Begin.Before(out[j].Begin)
		}
		return out[i].Domain+out[i].Address < out[j].Domain+out[j].Address
	})
	return out, nil
}

// Suppressions owns the addresses that get no reports (wehr dmarc
// suppress): they bounced, or asked not to.
//
//	rsup:ADDRESS   the entry (JSON)
type Suppressions struct{ st Store }

// NewSuppressions is the suppression list in st.
func NewSuppressions(st Store) Suppressions { return Suppressions{st: st} }

// Suppression is one address on the list.
type Suppression struct {
	Address string    `json:"address"`
	Reason  string    `json:"reason,omitempty"`
	Added   time.Time `json:"added"`
}

// Add puts addr on the list until it is removed.
func (s Suppressions) Add(ctx context.Context, sp Suppression) error {
	sp.Address = strings.ToLower(strings.TrimSpace(sp.Address))
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return s.st.Set(ctx, "rsup:"+sp.Address, b, 0)
}

// Remove takes addr off the list.
func (s Suppressions) Remove(ctx context.Context, addr string) error {
	return s.st.Delete(ctx, "rsup:"+strings.ToLower(strings.TrimSpace(addr)))
}

// Has says whether addr is on the list.
func (s Suppressions) Has(ctx context.Context, addr string) (bool, error) {
	_, ok, err := s.st.Get(ctx, "rsup:"+strings.ToLower(strings.TrimSpace(addr)))
	return ok, err
}

// List returns the list, sorted by address.
func (s Suppressions) List(ctx context.Context) ([]Suppression, error) {
	keys, err := s.st.Scan(ctx, "rsup:", 0)
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	var out []Suppression
	for _, k := range keys {
		b, ok, err := s.st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		var sp Suppression
		if ok && json.Unmarshal(b, &sp) == nil {
			out = append(out, sp)
		}
	}
	return out, nil
}
