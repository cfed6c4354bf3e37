package store

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ReceivedReports owns the reports others sent about the domains we
// host: DMARC aggregate reports (package dmarcreport reads and writes
// them) and TLS reports (package tlsrpt):
//
//	rinm:DOMAIN:ID     a DMARC report without its records (JSON);
//	                   written last, so a report is stored once this
//	                   exists
//	rinr:TOKEN:NNNNNN  its records, a chunk of them (JSON)
//	rinf:TOKEN:NNNNNN  its file as received (the XML, gzipped), a chunk
//	rind:DOMAIN:DATE   a day of DOMAIN's DMARC reports added up (JSON;
//	                   package dmarcreport's tallies, made again from
//	                   the reports whenever they disagree)
//	ring:DOMAIN        Counters [generation]: one more for each DMARC
//	                   report stored, after its tally
//	rinv:DOMAIN        what the last check of the tallies against the
//	                   reports saw: "GENERATION DAYS"
//	rinl:DOMAIN        the latest reports stored, one a line:
//	                   "GENERATION ID DATE" (the latest 250 to 500)
//	tlsm:DOMAIN:ID     a TLS report, the part about DOMAIN (JSON)
//
// ID is derived from the reporting organisation and its report id, so
// a report sent twice is stored once. TOKEN is new for every ingest, so
// an ingest that stopped half-way never mixes its chunks with another's
// (they expire with the keep time).
type ReceivedReports struct {
	st   Store
	keep time.Duration
	meta string // rinm: or tlsm:
	day  string // rind: (TLS reports have no days)
}

// NewReceivedReports is the received DMARC reports in st, kept for
// keep.
func NewReceivedReports(st Store, keep time.Duration) ReceivedReports {
	return ReceivedReports{st: st, keep: keep, meta: "rinm:", day: "rind:"}
}

// NewTLSReports is the received TLS reports in st, kept for keep. They
// are small (a few KB a day per reporter): they have no chunks.
func NewTLSReports(st Store, keep time.Duration) ReceivedReports {
	return ReceivedReports{st: st, keep: keep, meta: "tlsm:"}
}

func checkPart(what, s string) error {
	if s == "" || strings.ContainsAny(s, ": \r\n") {
		return fmt.Errorf("store: received report: bad %s %q", what, s)
	}
	return nil
}

// Meta returns the report ID of domain, if it is stored.
func (r ReceivedReports) Meta(ctx context.Context, domain, id string) ([]byte, bool, error) {
	if checkPart("id", id) != nil {
		return nil, false, nil // no id a URL makes up reaches another key
	}
	return r.st.Get(ctx, r.meta+strings.ToLower(domain)+":"+id)
}

// Has says whether the report ID of domain is stored.
func (r ReceivedReports) Has(ctx context.Context, domain, id string) (bool, error) {
	_, ok, err := r.Meta(ctx, domain, id)
	return ok, err
}

// PutChunk writes the n-th chunk of records of an ingest.
func (r ReceivedReports) PutChunk(ctx context.Context, token string, n int, b []byte) error {
	return r.putChunk(ctx, "rinr:", token, n, b)
}

// Chunk reads the n-th chunk of records of an ingest.
func (r ReceivedReports) Chunk(ctx context.Context, token string, n int) ([]byte, error) {
	return r.chunk(ctx, "rinr:", token, n)
}

// DeleteChunks removes the first n chunks of an ingest (a duplicate, or
// one that failed).
func (r ReceivedReports) DeleteChunks(ctx context.Context, token string, n int) error {
	return r.deleteChunks(ctx, "rinr:", token, n)
}

// PutFileChunk writes the n-th chunk of an ingest's report file.
func (r ReceivedReports) PutFileChunk(ctx context.Context, token string, n int, b []byte) error {
	return r.putChunk(ctx, "rinf:", token, n, b)
}

// FileChunk reads the n-th chunk of an ingest's report file.
func (r ReceivedReports) FileChunk(ctx context.Context, token string, n int) ([]byte, error) {
	return r.chunk(ctx, "rinf:", token, n)
}

// DeleteFileChunks removes the first n file chunks of an ingest.
func (r ReceivedReports) DeleteFileChunks(ctx context.Context, token string, n int) error {
	return r.deleteChunks(ctx, "rinf:", token, n)
}

func (r ReceivedReports) putChunk(ctx context.Context, prefix, token string, n int, b []byte) error {
	if err := checkPart("token", token); err != nil {
		return err
	}
	return r.st.Set(ctx, fmt.Sprintf("%s%s:%06d", prefix, token, n), b, r.keep)
}

func (r ReceivedReports) chunk(ctx context.Context, prefix, token string, n int) ([]byte, error) {
	b, ok, err := r.st.Get(ctx, fmt.Sprintf("%s%s:%06d", prefix, token, n))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("store: received report: chunk %s%d of %s is missing", prefix, n, token)
	}
	return b, nil
}

func (r ReceivedReports) deleteChunks(ctx context.Context, prefix, token string, n int) error {
	for i := 0; i < n; i++ {
		if err := r.st.Delete(ctx, fmt.Sprintf("%s%s:%06d", prefix, token, i)); err != nil {
			return err
		}
	}
	return nil
}

// PutMeta stores the report itself: from now on it is stored.
func (r ReceivedReports) PutMeta(ctx context.Context, domain, id string, b []byte) error {
	if err := checkPart("domain", domain); err != nil {
		return err
	}
	if err := checkPart("id", id); err != nil {
		return err
	}
	return r.st.Set(ctx, r.meta+strings.ToLower(domain)+":"+id, b, r.keep)
}

// StoredReport is a stored report's key parts and value.
type StoredReport struct {
	Domain, ID string
	Meta       []byte
}

// IDs returns the ids of domain's reports, unsorted: cheaper than Metas
// (keys only).
func (r ReceivedReports) IDs(ctx context.Context, domain string) ([]string, error) {
	prefix := r.meta + strings.ToLower(domain) + ":"
	keys, err := r.st.Scan(ctx, prefix, 0)
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, prefix)
	}
	return keys, nil
}

// Metas returns the reports of domain ("" for every domain), sorted by
// domain and id.
func (r ReceivedReports) Metas(ctx context.Context, domain string) ([]StoredReport, error) {
	prefix := r.meta
	if domain != "" {
		prefix += strings.ToLower(domain) + ":"
	}
	keys, err := r.st.Scan(ctx, prefix, 0)
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	var out []StoredReport
	for _, k := range keys {
		parts := strings.SplitN(k, ":", 3)
		if len(parts) != 3 {
			continue
		}
		b, ok, err := r.st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, StoredReport{Domain: parts[1], ID: parts[2], Meta: b})
		}
	}
	return out, nil
}

// StoredDay is one stored day of a domain's reports.
type StoredDay struct {
	Date  string // YYYY-MM-DD
	Value []byte
}

// Days returns domain's stored days, oldest first.
func (r ReceivedReports) Days(ctx context.Context, domain string) ([]StoredDay, error) {
	if r.day == "" {
		return nil, nil
	}
	prefix := r.day + strings.ToLower(domain) + ":"
	keys, err := r.st.Scan(ctx, prefix, 0)
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	out := make([]StoredDay, 0, len(keys))
	for _, k := range keys {
		b, ok, err := r.st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, StoredDay{Date: strings.TrimPrefix(k, prefix), Value: b})
		}
	}
	return out, nil
}

// Day returns domain's stored day date, if there is one.
func (r ReceivedReports) Day(ctx context.Context, domain, date string) ([]byte, bool, error) {
	if r.day == "" || checkPart("date", date) != nil {
		return nil, false, nil
	}
	return r.st.Get(ctx, r.day+strings.ToLower(domain)+":"+date)
}

// PutDay stores domain's day date; an empty b removes it.
func (r ReceivedReports) PutDay(ctx context.Context, domain, date string, b []byte) error {
	if r.day == "" {
		return fmt.Errorf("store: these reports have no days")
	}
	if err := checkPart("domain", domain); err != nil {
		return err
	}
	if err := checkPart("date", date); err != nil {
		return err
	}
	k := r.day + strings.ToLower(domain) + ":" + date
	if len(b) == 0 {
		return r.st.Delete(ctx, k)
	}
	return r.st.Set(ctx, k, b, r.keep)
}

// Bump counts one more report of domain stored (with its tally), id of
// day date, notes it among the domain's latest (one key: two ingests
// at once can lose one's note, and a check that misses a generation
// checks every report), and returns its generation.
func (r ReceivedReports) Bump(ctx context.Context, domain, id, date string) (int64, error) {
	if r.day == "" {
		return 0, nil
	}
	d := strings.ToLower(domain)
	c, err := r.st.Counters(ctx, "ring:"+d, []int64{1}, r.keep)
	if err != nil || len(c) == 0 {
		return 0, err
	}
	old, _, err := r.st.Get(ctx, "rinl:"+d)
	if err != nil {
		return c[0], err
	}
	if n := bytes.Count(old, []byte("\n")); n >= maxLatest {
		// The oldest half goes.
		for range n / 2 {
			old = old[bytes.IndexByte(old, '\n')+1:]
		}
	}
	latest := fmt.Appendf(bytes.Clone(old), "%d %s %s\n", c[0], id, date)
	return c[0], r.st.Set(ctx, "rinl:"+d, latest, r.keep)
}

// maxLatest bounds the reports Bump notes per domain.
const maxLatest = 500

// Latest returns the reports of domain noted by Bump: per generation,
// its id and day.
func (r ReceivedReports) Latest(ctx context.Context, domain string) (map[int64][2]string, error) {
	b, _, err := r.st.Get(ctx, "rinl:"+strings.ToLower(domain))
	if err != nil {
		return nil, err
	}
	out := map[int64][2]string{}
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		if g, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[g] = [2]string{f[1], f[2]}
		}
	}
	return out, nil
}

// Generation is how many reports of domain were stored (Bump), and
// what the last check of its tallies noted (SetChecked), if there was
// one.
func (r ReceivedReports) Generation(ctx context.Context, domain string) (gen int64, checked Checked, ok bool, err error) {
	if r.day == "" {
		return 0, Checked{}, false, nil
	}
	d := strings.ToLower(domain)
	c, err := r.st.Counters(ctx, "ring:"+d, nil, 0)
	if err != nil {
		return 0, Checked{}, false, err
	}
	if len(c) > 0 {
		gen = c[0]
	}
	b, ok, err := r.st.Get(ctx, "rinv:"+d)
	if err != nil || !ok {
		return gen, Checked{}, false, err
	}
	g, days, _ := strings.Cut(string(b), " ")
	var perr, derr error
	checked.Generation, perr = strconv.ParseInt(g, 10, 64)
	checked.Days, derr = strconv.Atoi(days)
	return gen, checked, perr == nil && derr == nil, nil
}

// Checked is what a check of a domain's tallies against its reports
// found: the generation it saw, and how many days had tallies.
type Checked struct {
	Generation int64
	Days       int
}

// SetChecked notes what a check of domain's tallies found.
func (r ReceivedReports) SetChecked(ctx context.Context, domain string, c Checked) error {
	if r.day == "" {
		return nil
	}
	return r.st.Set(ctx, "rinv:"+strings.ToLower(domain), fmt.Appendf(nil, "%d %d", c.Generation, c.Days), r.keep)
}

// Domains lists the domains that have reports.
func (r ReceivedReports) Domains(ctx context.Context) ([]string, error) {
	keys, err := r.st.Scan(ctx, r.meta, 0)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		if parts := strings.SplitN(k, ":", 3); len(parts) == 3 && !seen[parts[1]] {
			seen[parts[1]] = true
			out = append(out, parts[1])
		}
	}
	sort.Strings(out)
	return out, nil
}
