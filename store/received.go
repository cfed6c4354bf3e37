package store

import (
	"context"
	"fmt"
	"sort"
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
}

// NewReceivedReports is the received DMARC reports in st, kept for
// keep.
func NewReceivedReports(st Store, keep time.Duration) ReceivedReports {
	return ReceivedReports{st: st, keep: keep, meta: "rinm:"}
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
	_, ok, err := r.st.Get(ctx, r.meta+strings.ToLower(domain)+":"+id)
	return ok, err
}

// PutChunk writes the n-th chunk of records of an ingest.
func (r ReceivedReports) PutChunk(ctx context.Context, token string, n int, b []byte) error {
	if err := checkPart("token", token); err != nil {
		return err
	}
	return r.st.Set(ctx, fmt.Sprintf("rinr:%s:%06d", token, n), b, r.keep)
}

// Chunk reads the n-th chunk of records of an ingest.
func (r ReceivedReports) Chunk(ctx context.Context, token string, n int) ([]byte, error) {
	b, ok, err := r.st.Get(ctx, fmt.Sprintf("rinr:%s:%06d", token, n))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("store: received report: chunk %d of %s is missing", n, token)
	}
	return b, nil
}

// DeleteChunks removes the first n chunks of an ingest (a duplicate, or
// one that failed).
func (r ReceivedReports) DeleteChunks(ctx context.Context, token string, n int) error {
	for i := 0; i < n; i++ {
		if err := r.st.Delete(ctx, fmt.Sprintf("rinr:%s:%06d", token, i)); err != nil {
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
// (keys only), to see whether anything changed.
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
