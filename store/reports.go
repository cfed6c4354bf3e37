package store

import (
	"context"
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
