package dmarcreport

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
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

// ChunkRecords is how many records are stored together: what an ingest
// holds in memory at most, whatever the report's size.
const ChunkRecords = 500

// ReceivedKeep is how long received reports are kept.
const ReceivedKeep = 400 * 24 * time.Hour

// Stored is a received report as the store keeps it: the report
// without its records, and where they are.
type Stored struct {
	ID     string  `json:"id"`
	Report *Report `json:"report"`
	Token  string  `json:"token"`
	Chunks int     `json:"chunks"`
	// FileChunks hold the report file as received (its XML, gzipped
	// by us); none for reports stored before files were kept.
	FileChunks int       `json:"file_chunks,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	Source     string    `json:"source,omitempty"` // the attachment's name, as given
}

// ReportKey is the id under which a report is stored: from its
// reporting organisation and report id, so a report sent twice (RFC
// 9990 asks resends to keep the report id) is stored once.
func ReportKey(org, reportID string) string {
	h := sha256.Sum256([]byte(strings.ToLower(strings.TrimSpace(org)) + "\x00" + strings.TrimSpace(reportID)))
	return hex.EncodeToString(h[:10])
}

// Ingested says what became of one report.
type Ingested struct {
	Domain, ID, ReportID, OrgName string
	Records                       int
	Messages                      int64
	Duplicate                     bool
	Repairs                       []string
	// TallyErr says why the report's day tally was not written (it is
	// made again from the reports when read).
	TallyErr   error
	Attachment reportmail.Attachment
}

// Ingest reads one report (an email or a bare file) and stores it under
// its policy domain, its records in chunks as they are read (memory
// stays bounded by ChunkRecords, however large the report). A report
// already stored (same organisation and report id) is not stored again.
// A report that cannot be read is an error wrapping ErrNotReport,
// reportmail.ErrNotReport or reportmail.ErrBomb; one the store refused
// is a reportmail.StoreError.
func Ingest(ctx context.Context, st store.Store, input io.Reader, lim Limits, now time.Time) (Ingested, error) {
	rr := store.NewReceivedReports(st, ReceivedKeep)
	var tb [12]byte
	rand.Read(tb[:])
	token := hex.EncodeToString(tb[:])
	x, att, err := Open(input, lim)
	if err != nil {
		return Ingested{Attachment: att}, err
	}
	chunks := 0
	file := &fileWriter{ctx: ctx, rr: rr, token: token}
	x = io.TeeReader(x, file)
	one := newAdder("")
	buf := make([]ReceivedRecord, 0, ChunkRecords)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		b, err := json.Marshal(buf)
		if err != nil {
			return err
		}
		if err := rr.PutChunk(ctx, token, chunks, b); err != nil {
			return reportmail.StoreError{Err: err}
		}
		chunks++
		buf = buf[:0]
		return nil
	}
	rep, err := Decode(x, lim, func(r ReceivedRecord) error {
		one.record("", r)
		buf = append(buf, r)
		if len(buf) == ChunkRecords {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = file.Close()
	}
	cleanup := func() {
		rr.DeleteChunks(context.WithoutCancel(ctx), token, chunks)
		rr.DeleteFileChunks(context.WithoutCancel(ctx), token, file.n)
	}
	if err != nil {
		cleanup()
		return Ingested{Attachment: att}, err
	}
	id := ReportKey(rep.OrgName, rep.ReportID)
	out := Ingested{Domain: rep.Policy.Domain, ID: id, ReportID: rep.ReportID, OrgName: rep.OrgName,
		Records: rep.RecordCount, Messages: rep.MessageCount, Repairs: rep.Repairs, Attachment: att}
	if strings.ContainsAny(rep.Policy.Domain, ": \r\n") {
		cleanup()
		return out, fmt.Errorf("%w: the policy domain %q is not a domain name", ErrNotReport, rep.Policy.Domain)
	}
	has, err := rr.Has(ctx, rep.Policy.Domain, id)
	if err != nil {
		cleanup()
		return out, reportmail.StoreError{Err: err}
	}
	if has {
		cleanup()
		out.Duplicate = true
		return out, nil
	}
	b, err := json.Marshal(Stored{ID: id, Report: rep, Token: token, Chunks: chunks, FileChunks: file.n, ReceivedAt: now.UTC(), Source: att.Name})
	if err != nil {
		return out, err
	}
	if err := rr.PutMeta(ctx, rep.Policy.Domain, id, b); err != nil {
		cleanup()
		return out, reportmail.StoreError{Err: err}
	}
	// The report is stored; its day's tally is a cache of it, made again
	// when read if this fails.
	if date, ok := dateOf(rep); ok {
		one.settle(rep.OrgName, rep.Policy.Domain)
		one.report(id, rep)
		out.TallyErr = addReport(ctx, st, strings.ToLower(rep.Policy.Domain), id, date, one)
	}
	return out, nil
}

// fileChunk is the size of the chunks a report file is stored in.
const fileChunk = 256 << 10

// fileWriter stores what is written to it, gzipped, in chunks of the
// ingest's token.
type fileWriter struct {
	ctx   context.Context
	rr    store.ReceivedReports
	token string
	zw    *gzip.Writer
	buf   bytes.Buffer
	n     int
	err   error
}

func (f *fileWriter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if f.zw == nil {
		f.zw, _ = gzip.NewWriterLevel(&f.buf, gzip.BestSpeed)
	}
	f.zw.Write(p)
	if f.buf.Len() >= fileChunk {
		f.err = f.flush()
	}
	return len(p), f.err
}

func (f *fileWriter) flush() error {
	if f.buf.Len() == 0 {
		return nil
	}
	if err := f.rr.PutFileChunk(f.ctx, f.token, f.n, f.buf.Bytes()); err != nil {
		return reportmail.StoreError{Err: err}
	}
	f.n++
	f.buf.Reset()
	return nil
}

// Close stores the rest of the file.
func (f *fileWriter) Close() error {
	if f.err != nil || f.zw == nil {
		return f.err
	}
	f.zw.Close()
	f.err = f.flush()
	return f.err
}

// File writes the report's file as received (its XML) to w; false for
// a report stored before files were kept.
func (s Stored) File(ctx context.Context, st store.Store, w io.Writer) (bool, error) {
	if s.FileChunks == 0 {
		return false, nil
	}
	rr := store.NewReceivedReports(st, ReceivedKeep)
	pr, pw := io.Pipe()
	go func() {
		var err error
		for i := 0; i < s.FileChunks && err == nil; i++ {
			var b []byte
			if b, err = rr.FileChunk(ctx, s.Token, i); err == nil {
				_, err = pw.Write(b)
			}
		}
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	zr, err := gzip.NewReader(pr)
	if err != nil {
		return true, fmt.Errorf("dmarcreport: report %s file: %w", s.ID, err)
	}
	if _, err := io.Copy(w, zr); err != nil {
		return true, fmt.Errorf("dmarcreport: report %s file: %w", s.ID, err)
	}
	return true, nil
}

// Taker is Ingest as the report inbox calls it.
func Taker(st store.Store, lim Limits) reportmail.Taker {
	return func(ctx context.Context, r io.Reader) (reportmail.Taken, error) {
		res, err := Ingest(ctx, st, r, lim, time.Now())
		if err != nil {
			return reportmail.Taken{}, err
		}
		attrs := []any{"domain", res.Domain, "org", res.OrgName, "report_id", res.ReportID, "id", res.ID,
			"records", res.Records, "messages", res.Messages, "repairs", strings.Join(res.Repairs, "; ")}
		if res.TallyErr != nil {
			attrs = append(attrs, "tally_error", res.TallyErr.Error())
		}
		return reportmail.Taken{
			Duplicate: res.Duplicate,
			What: fmt.Sprintf("report %s from %s about %s: %d records, %d messages (%s)",
				res.ReportID, res.OrgName, res.Domain, res.Records, res.Messages, res.ID),
			Attrs: attrs,
		}, nil
	}
}

// Open finds the DMARC report in input, an email or a bare .xml,
// .xml.gz or .zip file, and returns a reader of its XML
// (reportmail.Open, with the limits that concern it).
func Open(input io.Reader, lim Limits) (io.Reader, reportmail.Attachment, error) {
	lim = lim.withDefaults()
	return reportmail.Open(input, reportmail.XML, reportmail.Limits{MaxAttachment: lim.MaxAttachment,
		MaxSize: lim.MaxXML, MaxRatio: lim.MaxRatio, MaxMembers: lim.MaxMembers, MaxParts: lim.MaxParts})
}

// Reports returns the stored reports of domain ("" for all) whose
// period ends at since or later, oldest first.
func Reports(ctx context.Context, st store.Store, domain string, since time.Time) ([]Stored, error) {
	metas, err := store.NewReceivedReports(st, ReceivedKeep).Metas(ctx, domain)
	if err != nil {
		return nil, err
	}
	var out []Stored
	for _, m := range metas {
		var s Stored
		if err := json.Unmarshal(m.Meta, &s); err != nil || s.Report == nil {
			continue
		}
		if s.Report.DateRange.End < since.Unix() {
			continue
		}
		out = append(out, s)
	}
	sortStored(out)
	return out, nil
}

func sortStored(s []Stored) {
	sort.Slice(s, func(i, j int) bool { return less(s[i], s[j]) })
}

func less(a, b Stored) bool {
	if a.Report.DateRange.Begin != b.Report.DateRange.Begin {
		return a.Report.DateRange.Begin < b.Report.DateRange.Begin
	}
	return a.ID < b.ID
}

// Find returns the stored report whose id (or report id) is id.
func Find(ctx context.Context, st store.Store, id string) (Stored, error) {
	all, err := Reports(ctx, st, "", time.Time{})
	if err != nil {
		return Stored{}, err
	}
	for _, s := range all {
		if s.ID == id || s.Report.ReportID == id {
			return s, nil
		}
	}
	return Stored{}, fmt.Errorf("dmarcreport: no stored report %q (wehr dmarc reports list shows them)", id)
}

// FindIn returns domain's stored report whose id is id (one store
// read), and whether there is one.
func FindIn(ctx context.Context, st store.Store, domain, id string) (Stored, bool, error) {
	b, ok, err := store.NewReceivedReports(st, ReceivedKeep).Meta(ctx, domain, id)
	if err != nil || !ok {
		return Stored{}, false, err
	}
	var s Stored
	if err := json.Unmarshal(b, &s); err != nil || s.Report == nil {
		return Stored{}, false, nil
	}
	return s, true, nil
}

// Whole is the stored report with its records, for a download: all of
// them in memory, as many as ingest's limits let a report have.
func (s Stored) Whole(ctx context.Context, st store.Store) (*Report, error) {
	rep := *s.Report
	rep.Records = nil
	err := s.Records(ctx, st, func(r ReceivedRecord) error {
		rep.Records = append(rep.Records, r)
		return nil
	})
	return &rep, err
}

// Records hands the records of a stored report to fn, a chunk at a
// time.
func (s Stored) Records(ctx context.Context, st store.Store, fn func(ReceivedRecord) error) error {
	rr := store.NewReceivedReports(st, ReceivedKeep)
	for i := 0; i < s.Chunks; i++ {
		b, err := rr.Chunk(ctx, s.Token, i)
		if err != nil {
			return err
		}
		var recs []ReceivedRecord
		if err := json.Unmarshal(b, &recs); err != nil {
			return fmt.Errorf("dmarcreport: report %s chunk %d: %w", s.ID, i, err)
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}
