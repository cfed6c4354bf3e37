package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/tlsrpt"
)

const stalwartDir = "../../dmarcreport/testdata/stalwart"

// serveStore runs wehr serve with an embedded store and returns the
// config file of its ops commands.
func serveStore(t *testing.T, extra string) (cfg, dir string) {
	t.Helper()
	dir = t.TempDir()
	cfg = emptyConfig(t, fmt.Sprintf(`hostname: mx.test
log: {level: warn}
milter: {listen: "inet:127.0.0.1:%d"}
policyd: {listen: "inet:127.0.0.1:%d"}
store:
  path: %s
  admin_socket: %s
reports:
  failed: %s
%s`, freePort(t), freePort(t), filepath.Join(dir, "wehr.db"), filepath.Join(dir, "admin.sock"), filepath.Join(dir, "failed"), extra))
	srv := dnstest.New(t, `4.4.168.192.in-addr.arpa. 300 IN PTR forger.example.`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var serveErr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--resolver", srv.Addr(), "serve"}, strings.NewReader(""), &bytes.Buffer{}, &serveErr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, serveErr.String())
		}
	})
	for range 200 {
		if _, err := os.Stat(filepath.Join(dir, "admin.sock")); err == nil {
			return cfg, dir
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no admin socket: %s", serveErr.String())
	return
}

// The Postfix pipe contract: stored, duplicate and unreadable reports
// exit 0 (the unreadable one kept with its reason, never bounced); no
// store exits 75 so Postfix tries again.
func TestDMARCIngest(t *testing.T) {
	cfg, dir := serveStore(t, "")
	eml, err := os.ReadFile(filepath.Join(stalwartDir, "100.eml"))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := wehrStdin(t, string(eml), "--config", cfg, "dmarc", "ingest")
	if code != 0 || !strings.Contains(out, "stored report 5264580628977113351 from google.com about stalw.art: 1 records") {
		t.Fatalf("ingest: %d %q %s", code, out, errs)
	}
	if code, out, _ = wehrStdin(t, string(eml), "--config", cfg, "dmarc", "ingest", "-"); code != 0 || !strings.Contains(out, "duplicate") {
		t.Fatalf("again: %d %q", code, out)
	}
	code, out, _ = wehrStdin(t, "Subject: hi\r\n\r\nnot a report\r\n", "--config", cfg, "dmarc", "ingest")
	if code != 0 || !strings.Contains(out, "cannot be read, kept as") {
		t.Fatalf("unreadable: %d %q", code, out)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "failed", "*.eml"))
	reason, _ := os.ReadFile(kept[0] + ".reason")
	if len(kept) != 1 || !strings.Contains(string(reason), "no report attachment in the message") {
		t.Fatalf("failed folder: %v %q", kept, reason)
	}
	if b, _ := os.ReadFile(kept[0]); !strings.Contains(string(b), "not a report") {
		t.Fatal("the kept message is not the one received")
	}
	// A file argument works as well as standard input.
	if code, out, _ = wehr(t, "--config", cfg, "dmarc", "ingest", filepath.Join(stalwartDir, "003.xml")); code != 0 || !strings.Contains(out, "from Fastmail Pty Ltd about stalw.art") {
		t.Fatalf("file: %d %q", code, out)
	}

	// Nothing listening: 75, and nothing is kept as unreadable.
	down := emptyConfig(t, fmt.Sprintf("store: {path: %s/x.db, admin_socket: %s/none.sock}\nreports: {failed: %s/failed2}\n", dir, dir, dir))
	if code, _, errs = wehrStdin(t, string(eml), "--config", down, "dmarc", "ingest"); code != 75 {
		t.Fatalf("store down: exit %d, want 75: %s", code, errs)
	}
	// A configuration that does not load is also for later, not a bounce.
	broken := emptyConfig(t, "reports: {queue: x}\n")
	if code, _, _ = wehrStdin(t, string(eml), "--config", broken, "dmarc", "ingest"); code != 75 {
		t.Fatalf("broken config: exit %d, want 75", code)
	}

	// What was stored is listed, shown and summarised.
	code, out, _ = wehr(t, "--config", cfg, "--json", "dmarc", "reports", "list", "--domain", "stalw.art")
	var list struct {
		Received []struct {
			ID       string                     `json:"id"`
			OrgName  string                     `json:"org_name"`
			ReportID string                     `json:"report_id"`
			Messages int64                      `json:"messages"`
			Range    struct{ Begin, End int64 } `json:"date_range"`
		} `json:"received"`
		Sent []any `json:"sent"`
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.Received) != 2 || list.Received[1].OrgName != "google.com" || list.Sent == nil || list.Received[1].Range.Begin != 1669507200 {
		t.Fatalf("list: %d %v %s", code, err, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "--json", "dmarc", "reports", "show", list.Received[1].ID)
	if code != 0 || !strings.Contains(out, `"source_ip": "`) || !strings.Contains(out, `"report_id": "5264580628977113351"`) {
		t.Fatalf("show: %d %s", code, out)
	}
	// The file as received: its XML, whatever compression it came in.
	code, out, _ = wehr(t, "--config", cfg, "dmarc", "reports", "show", "--file", list.Received[1].ID)
	if code != 0 || !strings.Contains(out, "<feedback") || !strings.Contains(out, "<report_id>5264580628977113351</report_id>") {
		t.Fatalf("show --file: %d %.300s", code, out)
	}
	if code, out, _ = wehr(t, "--config", cfg, "dmarc", "reports", "show", "nope"); code != 1 {
		t.Fatalf("show unknown: %d %s", code, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "dmarc", "reports", "summary", "--domain", "stalw.art", "--since", "2022-01-01")
	if code != 0 || !strings.Contains(out, "stalw.art: 2 reports") || !strings.Contains(out, "Fastmail Pty Ltd") {
		t.Fatalf("summary: %d %s", code, out)
	}
}

// --maildir: each message goes to cur/ once stored, or to the failed
// folder with the reason.
func TestDMARCIngestMaildir(t *testing.T) {
	cfg, dir := serveStore(t, "")
	md := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(md, sub), 0o755)
	}
	for _, n := range []string{"101.eml", "102.eml", "103.eml"} {
		b, _ := os.ReadFile(filepath.Join(stalwartDir, n))
		os.WriteFile(filepath.Join(md, "new", "1700000000."+n), b, 0o644)
	}
	os.WriteFile(filepath.Join(md, "new", "1700000001.junk"), []byte("From: x\r\n\r\nbody\r\n"), 0o644)
	code, out, errs := wehr(t, "--config", cfg, "dmarc", "ingest", "--maildir", md)
	if code != 0 || !strings.Contains(out, "3 stored, 0 duplicates, 1 unreadable") {
		t.Fatalf("%d %s %s", code, out, errs)
	}
	left, _ := os.ReadDir(filepath.Join(md, "new"))
	cur, _ := os.ReadDir(filepath.Join(md, "cur"))
	failed, _ := filepath.Glob(filepath.Join(dir, "failed", "*.reason"))
	if len(left) != 0 || len(cur) != 3 || len(failed) != 1 {
		t.Fatalf("new %d, cur %d, failed %d", len(left), len(cur), len(failed))
	}
}

// report parse --json: the contract's field names, for every kind.
func TestDMARCReportParse(t *testing.T) {
	cfg := emptyConfig(t, "")
	code, out, errs := wehr(t, "--config", cfg, "--json", "dmarc", "report", "parse",
		filepath.Join(stalwartDir, "004.xml"), filepath.Join(stalwartDir, "005.xml"), filepath.Join(stalwartDir, "104.eml"))
	if code != 0 {
		t.Fatalf("%d %s", code, errs)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var reps []map[string]any
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		reps = append(reps, m)
	}
	if len(reps) != 3 {
		t.Fatalf("%d reports", len(reps))
	}
	p9990 := reps[0]["policy_published"].(map[string]any)
	p7489 := reps[1]["policy_published"].(map[string]any)
	if reps[0]["format"] != "rfc9990" || p9990["np"] != "none" || p9990["discovery_method"] != "treewalk" || p9990["testing"] != "n" {
		t.Errorf("RFC 9990 report: %v", reps[0])
	}
	if reps[1]["format"] != "rfc7489" || p7489["pct"] != 100.0 {
		t.Errorf("RFC 7489 report: %v", reps[1])
	}
	for _, r := range reps {
		for _, k := range []string{"org_name", "email", "report_id", "date_range", "records"} {
			if _, ok := r[k]; !ok {
				t.Errorf("no %q in %v", k, r)
			}
		}
		rec := r["records"].([]any)[0].(map[string]any)
		for _, k := range []string{"row", "identifiers", "auth_results"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("record without %q: %v", k, rec)
			}
		}
	}
	if code, _, errs = wehr(t, "--config", cfg, "dmarc", "report", "parse", filepath.Join(stalwartDir, "LICENSE-MIT.txt")); code != 1 || !strings.Contains(errs, "LICENSE-MIT.txt") {
		t.Fatalf("not a report: %d %s", code, errs)
	}
}

// wehr dmarc record prints a record our own parser reads as asked, and
// the authorisation record for an outside report address.
func TestDMARCRecord(t *testing.T) {
	cfg := emptyConfig(t, "")
	code, out, _ := wehr(t, "--config", cfg, "--json", "dmarc", "record", "Bank.Example", "--policy", "quarantine",
		"--subdomain-policy", "reject", "--np", "reject", "--rua", "d@bank.example", "--rua", "agg@reports.example.net", "--aspf", "s", "--testing")
	var recs []struct{ Name, Value string }
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil || len(recs) != 2 {
		t.Fatalf("%d %v %s", code, err, out)
	}
	r, err := mailauth.ParseDMARCRecord(recs[0].Value)
	if err != nil || recs[0].Name != "_dmarc.bank.example" || r.Policy != "quarantine" || r.Subdomain != "reject" || r.NonExistent != "reject" ||
		r.ASPF != 's' || r.ADKIM != 'r' || !r.Testing || len(r.RUA) != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	if recs[1].Name != "bank.example._report._dmarc.reports.example.net" || recs[1].Value != "v=DMARC1;" {
		t.Errorf("authorisation %+v", recs[1])
	}
	for _, bad := range [][]string{{"--policy", "block"}, {"--policy", "none", "--rua", "a@b.example;p=none"}, {"--policy", "none", "--adkim", "x"}} {
		if code, _, _ := wehr(t, append([]string{"--config", cfg, "dmarc", "record", "bank.example"}, bad...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", bad, code)
		}
	}
}

// wehr dmarc suppress adds, lists and removes.
func TestDMARCSuppress(t *testing.T) {
	cfg, _ := serveStore(t, "")
	if code, out, _ := wehr(t, "--config", cfg, "dmarc", "suppress", "--reason", "bounces", "D@Bank.Example"); code != 0 || !strings.Contains(out, "get no more reports") {
		t.Fatalf("%d %s", code, out)
	}
	if code, out, _ := wehr(t, "--config", cfg, "dmarc", "suppress", "--list"); code != 0 || !strings.Contains(out, "d@bank.example") || !strings.Contains(out, "bounces") {
		t.Fatalf("%d %s", code, out)
	}
	wehr(t, "--config", cfg, "dmarc", "suppress", "--remove", "d@bank.example")
	if code, out, _ := wehr(t, "--config", cfg, "--json", "dmarc", "suppress", "--list"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("%d %s", code, out)
	}
}

// The TLS report pipe: the same contract as the DMARC one (stored,
// duplicate, unreadable kept, 75 without a store), and what was stored
// is listed, shown and summarised.
func TestTLSRPTIngest(t *testing.T) {
	cfg, dir := serveStore(t, "")
	rep, err := os.ReadFile("../../tlsrpt/testdata/rfc8460.json")
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := wehrStdin(t, string(rep), "--config", cfg, "tlsrpt", "ingest")
	if code != 0 || !strings.Contains(out, "stored TLS report 5065427c-23d3-47ca-b6e0-946ea0e8c4be from Company-X about company-y.example: 5629 sessions, 303 failed") {
		t.Fatalf("ingest: %d %q %s", code, out, errs)
	}
	if code, out, _ = wehrStdin(t, string(rep), "--config", cfg, "tlsrpt", "ingest", "-"); code != 0 || !strings.Contains(out, "duplicate") {
		t.Fatalf("again: %d %q", code, out)
	}
	// A DMARC report sent to the TLS address: kept aside, the reason
	// names the command that reads it.
	code, out, _ = wehr(t, "--config", cfg, "tlsrpt", "ingest", filepath.Join(stalwartDir, "003.xml"))
	if code != 0 || !strings.Contains(out, "cannot be read, kept as") || !strings.Contains(out, "wehr dmarc ingest") {
		t.Fatalf("a DMARC report: %d %q", code, out)
	}
	down := emptyConfig(t, fmt.Sprintf("store: {path: %s/x.db, admin_socket: %s/none.sock}\nreports: {failed: %s/failed2}\n", dir, dir, dir))
	if code, _, errs = wehrStdin(t, string(rep), "--config", down, "tlsrpt", "ingest"); code != 75 {
		t.Fatalf("store down: exit %d, want 75: %s", code, errs)
	}
	code, out, _ = wehr(t, "--config", cfg, "tlsrpt", "reports", "list", "--domain", "company-y.example")
	if code != 0 || !strings.Contains(out, "TLS reports about company-y.example: 1") || !strings.Contains(out, "5326 ok    303 failed") {
		t.Fatalf("list: %d %q", code, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "tlsrpt", "reports", "show", "5065427c-23d3-47ca-b6e0-946ea0e8c4be")
	if code != 0 || !strings.Contains(out, "starttls-not-supported") || !strings.Contains(out, "mx2.mail.company-y.example") {
		t.Fatalf("show: %d %q", code, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "--json", "tlsrpt", "reports", "summary", "--domain", "company-y.example")
	var sum tlsrpt.DomainSummary
	if err := json.Unmarshal([]byte(out), &sum); code != 0 || err != nil || sum.Failed != 303 || len(sum.Failures) != 3 || sum.Failures[0].Sessions != 200 {
		t.Fatalf("summary: %d %v %q", code, err, out)
	}
	if code, out, _ = wehr(t, "--config", cfg, "tlsrpt", "reports", "list", "--domain", "other.example"); code != 0 || !strings.Contains(out, ": 0") {
		t.Fatalf("another domain: %d %q", code, out)
	}
}
