package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// The shared half of fastmail/authentication_milter's end-to-end cases
// (testdata/authentication-milter, from ../shared/conformance). For each
// case the engine runs on the source message with the case's connection,
// and every spf, dkim, dmarc and iprev result in the expected
// Authentication-Results is compared with ours: method, result word, and
// header.d / smtp.mailfrom / header.from.
//
// Behaviour particular to authentication_milter, and how it maps:
//   - iprev: it writes "iprev=fail (NOT FOUND)" when the client has no PTR
//     record; RFC 8601 2.7.3 calls that permerror, which we write.
//   - rsa-sha1 signatures: it passes them; RFC 8301 3.1 forbids that, our
//     DKIM library gives permerror.
//   - hide_none, LocalIP and TrustedIP handlers leave methods out of its
//     header; we compare only the methods its header has.
//   - ip_map: its config rewrites the client 4.3.2.1 to 74.125.82.171 and
//     mail-we0-f171.google.com; the harness does the same.
//   - DMARC p=reject: without hard_reject it quarantines (reason
//     local_policy); with hard_reject it answers 550. We compare the
//     result word, and for dmarc_reject_hard expect our own 550 (the
//     refusal rule holds: the author's SPF fails for the client).
//   - google_apps_good.timeout runs a sleeping test handler in dry-run
//     mode and adds no header: nothing to compare; we check that a verdict
//     comes back.
//   - A malformed From (spam_headers: a quoted display name, a comma, then
//     an angle address): it gives dmarc=permerror "no parseable from
//     domain"; we take the address a mail reader shows and evaluate DMARC
//     for its domain, so that a broken From cannot switch DMARC off
//     (RFC 9989 11.5).
//   - X-Google-DKIM, dkim-adsp, x-ptr, senderid are not methods of ours.
func TestAuthenticationMilterCases(t *testing.T) {
	dir := "testdata/authentication-milter"
	data, err := os.ReadFile(filepath.Join(dir, "cases.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type tx struct {
		Source    string
		ConnectIP string `yaml:"connect_ip"`
		Helo      string
		MailFrom  string `yaml:"mail_from"`
	}
	var cases []struct {
		ID            string
		Mode          string
		Config        string
		Source        string
		ConnectIP     string `yaml:"connect_ip"`
		Helo          string
		MailFrom      string `yaml:"mail_from"`
		Expected      string
		ExpectedReply string `yaml:"expected_smtp_reply_at_end_of_data"`
		Transactions  []tx
	}
	if err := yaml.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t, "")
	loadZonefile(t, srv, filepath.Join(dir, "zonefile"))
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(res, Config{AuthservID: "test.module", DMARC: DMARCConfig{MailingLists: MailingLists{Enabled: true}}})

	compared, matched, mapped := 0, 0, 0
	for _, c := range cases {
		txs := c.Transactions
		if len(txs) == 0 {
			txs = []tx{{Source: c.Source, ConnectIP: c.ConnectIP, Helo: c.Helo, MailFrom: c.MailFrom}}
		}
		var expected []authres.Result
		var expectedAR [][]authres.Result
		if c.Expected != "" {
			expectedAR = ourHeaders(t, filepath.Join(dir, c.Expected))
		}
		for i, x := range txs {
			v := runCase(t, e, filepath.Join(dir, x.Source), x.ConnectIP, x.Helo, x.MailFrom)
			if c.ExpectedReply != "" {
				if v.Action != ActionReject || !strings.HasPrefix(v.SMTPReply, c.ExpectedReply+" ") {
					t.Errorf("%s: want a %s reply, got %s %q", c.ID, c.ExpectedReply, v.Action, v.SMTPReply)
				}
				continue
			}
			if i >= len(expectedAR) {
				if c.ID != "google_apps_good.timeout" && c.ID != "dmarc_reject_hard" {
					t.Errorf("%s: no expected header for transaction %d", c.ID, i)
				}
				continue
			}
			expected = expectedAR[i]
			for _, want := range expected {
				switch want.Method {
				case "spf", "dkim", "dmarc", "iprev":
				default:
					continue
				}
				compared++
				if want.Method == "dmarc" && want.Value == "permerror" && want.Comment == "no parseable from domain" {
					// Malformed From (mapped above): we evaluate the
					// displayed address's domain instead.
					if v.DMARC.FromDomain == "" {
						t.Errorf("%s: no From domain taken from the malformed From", c.ID)
					}
					mapped++
					continue
				}
				got, ok := findResult(v.Results, want)
				switch {
				case !ok:
					t.Errorf("%s: no %s result matching %+v in %q", c.ID, want.Method, want, v.AuthenticationResults)
				case got.Value == want.Value:
					matched++
				case want.Method == "iprev" && want.Value == "fail" && got.Value == string(iprev.PermError) && strings.Contains(got.Reason, "no PTR record"):
					mapped++
				case want.Method == "dkim" && want.Value == "pass" && propOf(want, "header", "a") == "rsa-sha1" && got.Value == string(DKIMPermError):
					mapped++
				default:
					t.Errorf("%s: %s=%s, expected %s=%s (%s)", c.ID, got.Method, got.Value, want.Method, want.Value, v.AuthenticationResults)
				}
			}
		}
	}
	t.Logf("%d of %d results compared match; %d differ as mapped above", matched, compared, mapped)
	if compared < 60 {
		t.Errorf("only %d results compared", compared)
	}
}

func propOf(r authres.Result, ptype, prop string) string {
	v, _ := r.Prop(ptype, prop)
	return v
}

// findResult finds our result for the same method and subject.
func findResult(ours []authres.Result, want authres.Result) (authres.Result, bool) {
	for _, r := range ours {
		if r.Method != want.Method {
			continue
		}
		switch want.Method {
		case "dkim":
			if !strings.EqualFold(propOf(r, "header", "d"), propOf(want, "header", "d")) || propOf(r, "header", "b") != propOf(want, "header", "b") {
				continue
			}
		case "dmarc":
			if !strings.EqualFold(propOf(r, "header", "from"), propOf(want, "header", "from")) {
				continue
			}
		case "spf":
			if propOf(want, "smtp", "mailfrom") == "" || !strings.EqualFold(propOf(r, "smtp", "mailfrom"), propOf(want, "smtp", "mailfrom")) {
				continue
			}
		}
		return r, true
	}
	return authres.Result{}, false
}

func runCase(t *testing.T, e *Engine, source, ip, helo, mailFrom string) *Verdict {
	t.Helper()
	// authentication_milter's ip_map (config/normal).
	if ip == "4.3.2.1" || strings.HasPrefix(ip, "5.4.3.") {
		ip, helo = "74.125.82.171", "mail-we0-f171.google.com"
	}
	mf := strings.Fields(mailFrom)
	if len(mf) > 0 {
		mailFrom = strings.Trim(mf[0], "<>")
	}
	msg, err := os.ReadFile(source)
	if err != nil {
		t.Fatal(err)
	}
	v, err := e.Verify(context.Background(), Envelope{ClientIP: net.ParseIP(ip), Helo: helo, MailFrom: mailFrom}, bytes.NewReader(crlf(msg)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// ourHeaders returns the results of the A-R headers authentication_milter
// wrote in an expected file, in order (one per message).
func ourHeaders(t *testing.T, path string) [][]authres.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]authres.Result
	// SMTP-mode files are a transcript: each message follows a DATA line.
	msgs := strings.Split(string(crlf(data)), "\r\nDATA\r\n")
	if len(msgs) > 1 {
		msgs = msgs[1:]
	}
	for _, m := range msgs {
		h, err := ReadHeader(bufio.NewReader(strings.NewReader(m)), 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range h.Fields {
			if !strings.EqualFold(f.Name, "Authentication-Results") {
				continue
			}
			id, rs, err := authres.Parse(f.Value())
			if err != nil {
				t.Fatalf("%s: parse %q: %v", path, f.Value(), err)
			}
			if id == "test.module" || id == "server.example.com" || id == "mx.example.net" {
				out = append(out, rs)
				break
			}
		}
	}
	return out
}

// loadZonefile serves the cases' zonefile: BIND-style records, one per
// line; lines that are not records (comments, ;ERROR markers, records
// without data) are skipped, which leaves those names NXDOMAIN.
func loadZonefile(t *testing.T, srv *dnstest.Server, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		rr, err := dns.NewRR(line)
		if err != nil || rr == nil {
			continue
		}
		srv.Add(rr)
		n++
	}
	if n < 50 {
		t.Fatalf("only %d records loaded from %s", n, path)
	}
}
