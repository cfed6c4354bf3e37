package dmarcreport

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// A day of rows becomes one report that the RFC 9990 schema accepts;
// the same rows in two hours add up; the report id and file name depend
// only on the domain and the period.
func TestBuildReport(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	r := NewRecorder(st, 100, nil, nil)
	day := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	rua := []string{"mailto:d@bank.example"}
	other := env
	other.ClientIP = net.ParseIP("2001:db8::25")
	other.MailFrom = ""
	for i, at := range []time.Time{day.Add(time.Hour), day.Add(time.Hour), day.Add(5 * time.Hour), day.Add(30 * time.Hour)} {
		r.now = func() time.Time { return at }
		r.Record(verdict(mailauth.DMARCFail, "reject", "reject", rua), env)
		if i == 0 {
			r.Record(verdict(mailauth.DMARCFail, "reject", "quarantine", rua, "mailing_list"), other)
			r.Record(verdict(mailauth.DMARCPass, "reject", "none", rua), other)
		}
	}
	if err := r.writeAll(ctx, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	rows, err := store.NewReportRows(st).Rows(ctx, "bank.example", day, day.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	meta := Meta{OrgName: "Example Hosting", Email: "dmarc-reports@mx1.example.net", Submitter: "mx1.example.net", Generator: "wehr"}
	f, err := Build(meta, "bank.example", day, day.Add(24*time.Hour), rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Records) != 3 || f.Records[0].Row.Count != 3 || f.Metadata.ReportID != "1795996800.bank.example@mx1.example.net" {
		t.Fatalf("report %+v", f)
	}
	if got := Filename("mx1.example.net", "bank.example", day, day.Add(24*time.Hour)); got != "mx1.example.net!bank.example!1795996800!1796083199.xml.gz" {
		t.Fatalf("file name %s", got)
	}
	x, err := f.XML()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.xml")
	if *update {
		os.WriteFile(golden, x, 0o644) //nolint:errcheck
	}
	if want, _ := os.ReadFile(golden); !bytes.Equal(x, want) {
		t.Errorf("report differs from %s (go test -update after review):\n%s", golden, x)
	}
	validate(t, x)

	gz, err := f.Gzip()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if back, _ := io.ReadAll(zr); !bytes.Equal(back, x) {
		t.Fatal("gzip does not round-trip")
	}
	// Nothing in the period: no report.
	if f, err := Build(meta, "bank.example", day.Add(72*time.Hour), day.Add(96*time.Hour), rows); f != nil || err != nil {
		t.Fatalf("empty period: %+v %v", f, err)
	}
}

// validate checks a report against the RFC 9990 schema with xmllint
// (libxml2-utils, which the test command installs).
func validate(t *testing.T, x []byte) {
	t.Helper()
	if _, err := exec.LookPath("xmllint"); err != nil {
		t.Fatal("xmllint is missing: install libxml2-utils (make test does)")
	}
	p := filepath.Join(t.TempDir(), "report.xml")
	if err := os.WriteFile(p, x, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("xmllint", "--noout", "--schema", filepath.Join("testdata", "dmarc-aggregate-rfc9990.xsd"), p).CombinedOutput()
	if err != nil {
		t.Fatalf("the RFC 9990 schema refuses the report: %v\n%s\n%s", err, out, x)
	}
}

// What a sender writes (his MAIL FROM, his HELO, the reasons quoting
// them) cannot break the report: markup and control characters are
// escaped or replaced, and the schema still accepts it.
func TestReportHostileText(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	r := NewRecorder(st, 100, nil, nil)
	day := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return day.Add(time.Hour) }
	hostile := env
	hostile.MailFrom = "x@</domain><script>&\x01\xff.example"
	v := verdict(mailauth.DMARCFail, "reject", "quarantine", []string{"mailto:d@bank.example"}, "other")
	v.AllDMARC[0].Reason = "]]></comment>\x00\x1b[31m"
	r.Record(v, hostile)
	if err := r.writeAll(ctx, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	rows, _ := store.NewReportRows(st).Rows(ctx, "bank.example", day, day.Add(24*time.Hour))
	f, err := Build(Meta{OrgName: "o", Email: "e@x.example", Submitter: "x.example"}, "bank.example", day, day.Add(24*time.Hour), rows)
	if err != nil || f == nil {
		t.Fatal(err)
	}
	x, err := f.XML()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(x, []byte("<script>")) || bytes.Contains(x, []byte("</domain><")) {
		t.Fatalf("markup passed through:\n%s", x)
	}
	validate(t, x)
}
