package tlsrpt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/store"
)

// Keep is how long received reports are kept.
const Keep = 400 * 24 * time.Hour

// Stored is the part of a received report about one policy domain, as
// the store keeps it: a report naming several domains is stored once
// per domain, each copy holding only that domain's policies, so what one
// customer is shown never holds another's.
type Stored struct {
	ID         string    `json:"id"`
	Domain     string    `json:"domain"`
	Report     *Report   `json:"report"`
	ReceivedAt time.Time `json:"received_at"`
	Source     string    `json:"source,omitempty"` // the attachment's name, as given
}

// Totals adds up the sessions of the stored report.
func (s Stored) Totals() (ok, failed int64) {
	for _, p := range s.Report.Policies {
		ok, failed = ok+p.Summary.Successful, failed+p.Summary.Failed
	}
	return ok, failed
}

// ReportKey is the id under which a report is stored: from its
// organisation and report id, so a report sent twice is stored once.
func ReportKey(org, reportID string) string {
	h := sha256.Sum256([]byte("tls\x00" + strings.ToLower(strings.TrimSpace(org)) + "\x00" + strings.TrimSpace(reportID)))
	return hex.EncodeToString(h[:10])
}

// Ingested says what became of one report.
type Ingested struct {
	ID, ReportID, OrgName string
	Domains               []string // the policy domains it was stored under
	Successful, Failed    int64
	Duplicate             bool
	Attachment            reportmail.Attachment
}

// Ingest reads one report (an email, RFC 8460 5.3, or a bare .json or
// .json.gz file) and stores it under each policy domain it names. A
// report already stored (same organisation and report id) is not stored
// again. A report that cannot be read is an error wrapping ErrNotReport
// or one of reportmail's; one the store refused is a
// reportmail.StoreError.
func Ingest(ctx context.Context, st store.Store, input io.Reader, lim Limits, now time.Time) (Ingested, error) {
	x, att, err := reportmail.Open(input, reportmail.JSON, reportmail.Limits{MaxSize: lim.MaxBytes})
	if err != nil {
		return Ingested{Attachment: att}, err
	}
	rep, err := Parse(x, lim)
	if err != nil {
		return Ingested{Attachment: att}, err
	}
	id := ReportKey(rep.OrganizationName, rep.ReportID)
	out := Ingested{ID: id, ReportID: rep.ReportID, OrgName: rep.OrganizationName, Attachment: att}
	byDomain := map[string][]Result{}
	for _, p := range rep.Policies {
		if byDomain[p.Policy.Domain] == nil {
			out.Domains = append(out.Domains, p.Policy.Domain)
		}
		byDomain[p.Policy.Domain] = append(byDomain[p.Policy.Domain], p)
		out.Successful += p.Summary.Successful
		out.Failed += p.Summary.Failed
	}
	sort.Strings(out.Domains)
	rr := store.NewTLSReports(st, Keep)
	stored := 0
	for _, d := range out.Domains {
		has, err := rr.Has(ctx, d, id)
		if err != nil {
			return out, reportmail.StoreError{Err: err}
		}
		if has {
			continue
		}
		part := *rep
		part.Policies = byDomain[d]
		b, err := json.Marshal(Stored{ID: id, Domain: d, Report: &part, ReceivedAt: now.UTC(), Source: att.Name})
		if err != nil {
			return out, err
		}
		if err := rr.PutMeta(ctx, d, id, b); err != nil {
			return out, reportmail.StoreError{Err: err}
		}
		stored++
	}
	out.Duplicate = stored == 0
	return out, nil
}

// Taker is Ingest as the report inbox calls it.
func Taker(st store.Store, lim Limits) reportmail.Taker {
	return func(ctx context.Context, r io.Reader) (reportmail.Taken, error) {
		res, err := Ingest(ctx, st, r, lim, time.Now())
		if err != nil {
			return reportmail.Taken{}, err
		}
		domains := strings.Join(res.Domains, ",")
		return reportmail.Taken{
			Duplicate: res.Duplicate,
			What: fmt.Sprintf("TLS report %s from %s about %s: %d sessions, %d failed (%s)",
				res.ReportID, res.OrgName, domains, res.Successful+res.Failed, res.Failed, res.ID),
			Attrs: []any{"domain", domains, "org", res.OrgName, "report_id", res.ReportID, "id", res.ID,
				"successful", res.Successful, "failed", res.Failed},
		}, nil
	}
}

// Reports returns the stored reports of domain ("" for all) whose
// period ends at since or later, oldest first.
func Reports(ctx context.Context, st store.Store, domain string, since time.Time) ([]Stored, error) {
	metas, err := store.NewTLSReports(st, Keep).Metas(ctx, domain)
	if err != nil {
		return nil, err
	}
	var out []Stored
	for _, m := range metas {
		var s Stored
		if err := json.Unmarshal(m.Meta, &s); err != nil || s.Report == nil {
			continue
		}
		if s.Report.DateRange.End.Before(since) {
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Report.DateRange.Start.Equal(b.Report.DateRange.Start) {
			return a.Report.DateRange.Start.Before(b.Report.DateRange.Start)
		}
		if a.Domain != b.Domain {
			return a.Domain < b.Domain
		}
		return a.ID < b.ID
	})
	return out, nil
}

// Find returns the stored reports whose id (or report id) is id: one per
// policy domain the report named.
func Find(ctx context.Context, st store.Store, id string) ([]Stored, error) {
	all, err := Reports(ctx, st, "", time.Time{})
	if err != nil {
		return nil, err
	}
	var out []Stored
	for _, s := range all {
		if s.ID == id || s.Report.ReportID == id {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("tlsrpt: no stored report %q (wehr tlsrpt reports list --domain D shows them)", id)
	}
	return out, nil
}
