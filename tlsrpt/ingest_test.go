package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/store"
)

func open(t testing.TB) store.Store {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// mail is a TLS report email as RFC 8460 5.3 describes it: a
// multipart/report with the gzipped report as application/tlsrpt+gzip.
func mail(report []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: tls-reports@reporter.example\r\nSubject: Report Domain: company-y.example Submitter: reporter.example Report-ID: <1>\r\n")
	b.WriteString("TLS-Report-Domain: company-y.example\r\nTLS-Report-Submitter: reporter.example\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nThis is a TLS report.\r\n--B\r\n")
	b.WriteString("Content-Type: application/tlsrpt+gzip\r\nContent-Disposition: attachment; filename=\"reporter.example!company-y.example!1459468800!1459555199.json.gz\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(gz(report))
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--B--\r\n")
	return b.Bytes()
}

func example(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/rfc8460.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Two policy domains in one report: each stored apart, holding only its
// own policies.
func twoDomains(t testing.TB, org, id string) []byte {
	b := strings.Replace(string(example(t)), `"Company-X"`, fmt.Sprintf("%q", org), 1)
	b = strings.Replace(b, `"5065427c-23d3-47ca-b6e0-946ea0e8c4be"`, fmt.Sprintf("%q", id), 1)
	other := `{"policy":{"policy-type":"no-policy-found","policy-domain":"Other.Example."},"summary":{"total-successful-session-count":7,"total-failure-session-count":1},
	  "failure-details":[{"result-type":"starttls-not-supported","sending-mta-ip":"192.0.2.9","receiving-mx-hostname":"mx.other.example","failed-session-count":1}]}]`
	i := strings.LastIndex(b, "]")
	return []byte(b[:i] + "," + other + b[i+1:])
}

// A report, as an email, a bare .json or a .json.gz file, is stored under
// each policy domain it names; the same report again is a duplicate.
func TestIngest(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	for name, in := range map[string][]byte{
		"email":     mail(example(t)),
		"bare json": example(t),
		"json.gz":   gz(example(t)),
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			res, err := Ingest(ctx, st, bytes.NewReader(in), DefaultLimits(), now)
			if err != nil || res.Duplicate || res.Successful != 5326 || res.Failed != 303 || strings.Join(res.Domains, ",") != "company-y.example" {
				t.Fatalf("%+v %v", res, err)
			}
			again, err := Ingest(ctx, st, bytes.NewReader(in), DefaultLimits(), now)
			if err != nil || !again.Duplicate || again.ID != res.ID {
				t.Fatalf("again: %+v %v", again, err)
			}
			reps, err := Reports(ctx, st, "Company-Y.example", time.Time{})
			if err != nil || len(reps) != 1 || reps[0].ReceivedAt != now {
				t.Fatalf("stored %+v %v", reps, err)
			}
		})
	}

	st := open(t)
	res, err := Ingest(ctx, st, bytes.NewReader(twoDomains(t, "Company-X", "r2")), DefaultLimits(), now)
	if err != nil || strings.Join(res.Domains, ",") != "company-y.example,other.example" {
		t.Fatalf("%+v %v", res, err)
	}
	other, _ := Reports(ctx, st, "other.example", time.Time{})
	if len(other) != 1 || len(other[0].Report.Policies) != 1 || other[0].Report.Policies[0].Policy.Type != "no-policy-found" {
		t.Fatalf("other.example sees %+v", other)
	}
	y, _ := Reports(ctx, st, "company-y.example", time.Time{})
	if len(y) != 1 || len(y[0].Report.Policies) != 1 || y[0].Report.Policies[0].Policy.Domain != "company-y.example" {
		t.Fatalf("company-y.example sees %+v", y)
	}
	if found, err := Find(ctx, st, "r2"); err != nil || len(found) != 2 {
		t.Fatalf("find: %d %v", len(found), err)
	}
	if l, _ := Reports(ctx, st, "company-y.example", time.Date(2016, 4, 2, 0, 0, 0, 0, time.UTC)); len(l) != 0 {
		t.Errorf("since after the period: %d reports", len(l))
	}
}

// The hostile variants: a DMARC report, an email without a report, a
// bomb, a report naming a domain with a colon (a store key part): each
// an error that says why, nothing stored.
func TestIngestHostile(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	bomb := append([]byte(`{"organization-name":"`), bytes.Repeat([]byte("a"), 40<<20)...)
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"a DMARC report", []byte(`<?xml version="1.0"?><feedback></feedback>`), "DMARC aggregate report (XML: wehr dmarc ingest"},
		{"a DMARC report by mail", []byte("Subject: x\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString(gz([]byte("<feedback/>"))) + "\r\n"), "wehr dmarc ingest"},
		{"no report", []byte("Subject: hello\r\n\r\nno report here\r\n"), "no report attachment"},
		{"a gzip bomb", gz(bomb), "bomb"},
		{"policy domain with a colon", bytes.Replace(example(t), []byte(`"company-y.example"`), []byte(`"a:b.example"`), 1), "policy-domain"},
		{"truncated", example(t)[:300], "not a TLS report"},
	}
	for _, tc := range tests {
		_, err := Ingest(ctx, st, bytes.NewReader(tc.in), DefaultLimits(), time.Now())
		if err == nil || !strings.Contains(err.Error(), tc.want) || !reportmail.Unreadable(err) {
			t.Errorf("%s: %v, want an unreadable report error with %q", tc.name, err, tc.want)
		}
	}
	if all, _ := Reports(ctx, st, "", time.Time{}); len(all) != 0 {
		t.Errorf("stored %d reports from hostile input", len(all))
	}
}

type downStore struct{ store.Store }

func (downStore) Set(context.Context, string, []byte, time.Duration) error {
	return fmt.Errorf("redis: %w", store.ErrUnavailable)
}

// Through the inbox: stored, kept aside with its reason, or "try later"
// when the store does not take it.
func TestInbox(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	in := &reportmail.Inbox{Kind: "tlsrpt", Take: Taker(open(t), DefaultLimits()), Failed: filepath.Join(dir, "failed"), Log: log, Out: &out}
	if err := in.One(ctx, bytes.NewReader(mail(example(t))), "stdin"); err != nil || !strings.Contains(out.String(), "stored TLS report 5065427c-23d3-47ca-b6e0-946ea0e8c4be from Company-X about company-y.example: 5629 sessions, 303 failed") {
		t.Fatalf("%v %s", err, out.String())
	}
	if err := in.One(ctx, strings.NewReader("<feedback/>"), "dmarc.xml"); err != nil {
		t.Fatal(err)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, "failed", "*.eml.reason"))
	if len(kept) != 1 {
		t.Fatalf("kept %v", kept)
	}
	if why, _ := os.ReadFile(kept[0]); !strings.Contains(string(why), "wehr dmarc ingest") {
		t.Errorf("reason %s", why)
	}
	// A Maildir: the report moves to cur/, the unreadable message to the
	// failed folder.
	md := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(md, sub), 0o700)
	}
	os.WriteFile(filepath.Join(md, "new", "1.eml"), mail(twoDomains(t, "Mailer-Z", "md-1")), 0o600)
	os.WriteFile(filepath.Join(md, "new", "2.eml"), []byte("Subject: hello\r\n\r\nnot a report\r\n"), 0o600)
	out.Reset()
	if err := in.Maildir(ctx, md); err != nil || !strings.Contains(out.String(), "1 stored, 0 duplicates, 1 unreadable") {
		t.Fatalf("maildir: %v %s", err, out.String())
	}
	if cur, _ := filepath.Glob(filepath.Join(md, "cur", "1.eml*")); len(cur) != 1 {
		t.Errorf("the stored report's message is not in cur/: %v", cur)
	}
	down := &reportmail.Inbox{Kind: "tlsrpt", Take: Taker(downStore{open(t)}, DefaultLimits()), Failed: filepath.Join(dir, "failed"), Log: log, Out: &out}
	if err := down.One(ctx, bytes.NewReader(example(t)), "stdin"); !errors.Is(err, reportmail.ErrTryLater) {
		t.Fatalf("store down: %v", err)
	}
}

// The summary: totals, policies, failures by kind and MX (most sessions
// first), orgs; only the domain's own policies count.
func TestSummarize(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	now := time.Now()
	for i, org := range []string{"Company-X", "Mailer-Z", "Company-X"} {
		if _, err := Ingest(ctx, st, bytes.NewReader(twoDomains(t, org, fmt.Sprint("id-", i))), DefaultLimits(), now); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Summarize(ctx, st, "company-y.example.", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Reports != 3 || sum.Successful != 3*5326 || sum.Failed != 3*303 {
		t.Fatalf("totals %+v", sum)
	}
	if len(sum.Policies) != 1 || sum.Policies[0].Mode != "testing" || sum.Policies[0].Reports != 3 {
		t.Errorf("policies %+v", sum.Policies)
	}
	if len(sum.Failures) != 3 || sum.Failures[0].ResultType != "starttls-not-supported" || sum.Failures[0].Sessions != 600 ||
		sum.Failures[0].MX != "mx2.mail.company-y.example" || len(sum.Failures[0].Orgs) != 2 {
		t.Errorf("failures %+v", sum.Failures)
	}
	if len(sum.Orgs) != 2 || sum.Orgs[0].Org != "Company-X" || sum.Orgs[0].Reports != 2 {
		t.Errorf("orgs %+v", sum.Orgs)
	}
	if len(sum.Days) != 1 || sum.Days[0].Date != "2016-04-01" || sum.Days[0].Reports != 3 || sum.Days[0].Failed != 3*303 {
		t.Errorf("days %+v", sum.Days)
	}
	for _, f := range sum.Failures {
		if f.MX == "mx.other.example" {
			t.Errorf("another domain's failure in the summary: %+v", f)
		}
	}
}
