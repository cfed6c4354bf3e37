package dmarcreport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store"
)

// genReport writes a report of n records, each from its own address,
// every third failing DMARC, without holding it in memory.
func genReport(w io.Writer, org, id string, n int) error {
	if _, err := fmt.Fprintf(w, `<?xml version="1.0"?><feedback><version>1.0</version><report_metadata><org_name>%s</org_name><email>r@reporter.example</email><report_id>%s</report_id><date_range><begin>1764460800</begin><end>1764547199</end></date_range></report_metadata><policy_published><domain>bank.example</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct></policy_published>`, org, id); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		dkim := "pass"
		if i%3 == 0 {
			dkim = "fail"
		}
		if _, err := fmt.Fprintf(w, "<record><row><source_ip>10.%d.%d.%d</source_ip><count>%d</count><policy_evaluated><disposition>none</disposition><dkim>%s</dkim><spf>fail</spf></policy_evaluated></row><identifiers><header_from>bank.example</header_from></identifiers><auth_results><dkim><domain>bank.example</domain><selector>s1</selector><result>%s</result></dkim><spf><domain>bulk.example</domain><result>fail</result></spf></auth_results></record>\n",
			i>>16&255, i>>8&255, i&255, 1+i%2, dkim, dkim); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "</feedback>\n")
	return err
}

func report(t testing.TB, org, id string, n int) []byte {
	var b bytes.Buffer
	if err := genReport(&b, org, id, n); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A report is stored under its domain, its records in chunks; the same
// report again is a duplicate; another organisation's report with the
// same id is not.
func TestIngest(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	in, err := Ingest(ctx, st, bytes.NewReader(gz(report(t, "Google", "r1", 1201))), Limits{}, now)
	if err != nil || in.Duplicate || in.Records != 1201 || in.Domain != "bank.example" || in.Messages != 1801 {
		t.Fatalf("%+v %v", in, err)
	}
	s, err := Find(ctx, st, in.ID)
	if err != nil || s.Chunks != 3 || s.Report.OrgName != "Google" || len(s.Report.Records) != 0 {
		t.Fatalf("stored %+v %v", s, err)
	}
	n := 0
	if err := s.Records(ctx, st, func(r ReceivedRecord) error { n++; return nil }); err != nil || n != 1201 {
		t.Fatalf("read back %d records: %v", n, err)
	}
	again, err := Ingest(ctx, st, bytes.NewReader(report(t, "google", "r1", 1201)), Limits{}, now)
	if err != nil || !again.Duplicate || again.ID != in.ID {
		t.Fatalf("duplicate: %+v %v", again, err)
	}
	other, err := Ingest(ctx, st, bytes.NewReader(report(t, "Yahoo", "r1", 3)), Limits{}, now)
	if err != nil || other.Duplicate {
		t.Fatalf("another org's report taken for a duplicate: %+v %v", other, err)
	}
	// The duplicate's chunks were removed: only the two reports' remain.
	keys, _ := st.Scan(ctx, "rinr:", 0)
	if len(keys) != 4 {
		t.Errorf("chunks left: %d, want 4", len(keys))
	}
	if keys, _ := st.Scan(ctx, "rinf:", 0); len(keys) != 2 {
		t.Errorf("file chunks left: %d, want 2", len(keys))
	}
	// The file as received (the XML inside the gzip), byte for byte.
	var file bytes.Buffer
	if kept, err := s.File(ctx, st, &file); !kept || err != nil || !bytes.Equal(file.Bytes(), report(t, "Google", "r1", 1201)) {
		t.Errorf("file: kept %v, %v, %d bytes", kept, err, file.Len())
	}
	all, _ := Reports(ctx, st, "bank.example", time.Time{})
	if len(all) != 2 {
		t.Errorf("reports %d", len(all))
	}
	if l, _ := Reports(ctx, st, "bank.example", time.Unix(1764547200, 0)); len(l) != 0 {
		t.Errorf("--since after the period: %d reports", len(l))
	}
}

// A report file larger than a chunk is kept in chunks and read back
// whole; a report stored before files were kept says so.
func TestIngestFile(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	x := report(t, "Big", "b1", 40_000)
	in, err := Ingest(ctx, st, bytes.NewReader(x), Limits{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s, err := Find(ctx, st, in.ID)
	if err != nil || s.FileChunks < 2 {
		t.Fatalf("%d file chunks, %v", s.FileChunks, err)
	}
	var file bytes.Buffer
	if kept, err := s.File(ctx, st, &file); !kept || err != nil || !bytes.Equal(file.Bytes(), x) {
		t.Errorf("file: kept %v, %v, %d of %d bytes", kept, err, file.Len(), len(x))
	}
	t.Logf("%d bytes of XML in %d chunks", len(x), s.FileChunks)
	// A chunk lost: an error, not a file cut short without a word.
	st.Delete(ctx, fmt.Sprintf("rinf:%s:%06d", s.Token, 1))
	if _, err := s.File(ctx, st, io.Discard); err == nil {
		t.Error("a lost chunk went unnoticed")
	}
	s.FileChunks = 0
	if kept, err := s.File(ctx, st, io.Discard); kept || err != nil {
		t.Errorf("an old report: kept %v, %v", kept, err)
	}
}

type downStore struct{ store.Store }

func (downStore) Set(context.Context, string, []byte, time.Duration) error {
	return fmt.Errorf("redis: %w", store.ErrUnavailable)
}

// The store down is a StoreError (the report is fine: try again); a
// broken report is unreadable.
func TestIngestErrors(t *testing.T) {
	ctx := context.Background()
	_, err := Ingest(ctx, downStore{open(t)}, bytes.NewReader(report(t, "G", "1", 3)), Limits{}, time.Now())
	var se reportmail.StoreError
	if !errors.As(err, &se) || reportmail.Unreadable(err) {
		t.Fatalf("store down: %v", err)
	}
	_, err = Ingest(ctx, open(t), strings.NewReader("<feedback><x>"), Limits{}, time.Now())
	if !reportmail.Unreadable(err) || !errors.Is(err, ErrNotReport) {
		t.Fatalf("broken report: %v", err)
	}
	// A hostile policy domain cannot reach into other keys.
	bad := strings.Replace(string(report(t, "G", "2", 1)), "<domain>bank.example</domain>", "<domain>x:rsent:y</domain>", 1)
	if _, err = Ingest(ctx, open(t), strings.NewReader(bad), Limits{}, time.Now()); !reportmail.Unreadable(err) {
		t.Fatalf("domain with a colon: %v", err)
	}
}

// The summary puts the sources failing DMARC first, with their PTR
// names, and counts per reporting organisation.
func TestSummary(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	srv := dnstest.New(t, `
3.0.0.10.in-addr.arpa. 300 IN PTR forger.example.
`)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{"Google", "Yahoo"} {
		if _, err := Ingest(ctx, st, bytes.NewReader(report(t, org, "x", 6)), Limits{}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Summarize(ctx, st, res, "bank.example", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// Records 0 and 3 fail (counts 1 and 2), reported by both orgs.
	if sum.Reports != 2 || sum.Messages != 18 || sum.Fail != 6 || len(sum.Orgs) != 2 || sum.Orgs[0].Fail != 3 {
		t.Fatalf("%+v", sum)
	}
	first := sum.Sources[0]
	if first.IP != "10.0.0.3" || first.Fail != 4 || len(first.PTR) != 1 || first.PTR[0] != "forger.example." || len(first.Orgs) != 2 {
		t.Errorf("first source %+v", first)
	}
	if sum.Sources[1].IP != "10.0.0.0" || sum.Sources[2].Fail != 0 {
		t.Errorf("order %+v", sum.Sources)
	}
}

// The inbox: stored, kept aside (with the reason, under a name of ours),
// or "try later" when the store does not take it.
func TestInbox(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	dir := t.TempDir()
	in := &reportmail.Inbox{Kind: "dmarc", Take: Taker(open(t), Limits{}), Failed: filepath.Join(dir, "failed"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: &out}
	if err := in.One(ctx, bytes.NewReader(report(t, "G", "1", 2)), "stdin"); err != nil || !strings.Contains(out.String(), "stored report 1 from G") {
		t.Fatalf("%v %s", err, out.String())
	}
	if err := in.One(ctx, strings.NewReader("Subject: x\r\n\r\nno report\r\n"), "../../etc/passwd"); err != nil {
		t.Fatal(err)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "failed", "*.eml"))
	if len(kept) != 1 || strings.Contains(kept[0], "passwd") {
		t.Fatalf("kept %v", kept)
	}
	down := &reportmail.Inbox{Kind: "dmarc", Take: Taker(downStore{open(t)}, Limits{}), Failed: filepath.Join(dir, "failed"), Log: in.Log, Out: &out}
	if err := down.One(ctx, bytes.NewReader(report(t, "G", "2", 2)), "stdin"); !errors.Is(err, reportmail.ErrTryLater) {
		t.Fatalf("store down: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "failed", ".incoming-*")); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}
