package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wehr/wehr/resolver/dnstest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/NAME, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the command printed (review, then go test -update):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// `wehr check message --json` over a table of messages: any change of
// a result, an A-R field or a reply's wording shows in review.
func TestCheckMessageGolden(t *testing.T) {
	zone, err := os.ReadFile("testdata/check/zone.txt")
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t, string(zone))
	cfg := emptyConfig(t, "authserv_id: mx.test\ndmarc:\n  reference_url: https://mx.test/why\n")
	tests := []struct {
		name, file, ip, helo, mailFrom string
	}{
		{"pass", "signed.eml", "192.0.2.10", "mail.good.example", "bounce@good.example"},
		{"forwarded-broken-signature", "forwarded.eml", "192.0.2.20", "mx.fwd.example", "fwd@fwd.example"},
		{"spoof", "spoof.eml", "203.0.113.5", "mail.evil.example", "x@evil.example"},
		{"spoof-null-sender", "spoof.eml", "203.0.113.5", "mail.evil.example", ""},
		{"no-from", "no-from.eml", "203.0.113.5", "mail.evil.example", "x@evil.example"},
		{"bare-cr-in-from", "bare-cr.eml", "203.0.113.5", "mail.evil.example", "x@evil.example"},
		{"p-none-fail", "p-none.eml", "203.0.113.5", "mail.evil.example", "x@evil.example"},
		{"six-authors", "six-authors.eml", "203.0.113.5", "mail.evil.example", "x@evil.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json", "check", "message",
				"--ip", tc.ip, "--helo", tc.helo, "--mail-from", tc.mailFrom, "--rcpt", "you@mx.test", filepath.Join("testdata", "check", tc.file))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var v any
			if err := json.Unmarshal([]byte(stdout), &v); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, stdout)
			}
			out, _ := json.MarshalIndent(v, "", "  ")
			golden(t, filepath.Join("check", tc.name+".json"), append(out, '\n'))
		})
	}
	// The table covers every action.
	seen := map[string]bool{}
	for _, tc := range tests {
		b, _ := os.ReadFile(filepath.Join("testdata", "check", tc.name+".json"))
		for _, a := range []string{"accept", "quarantine", "reject"} {
			if strings.Contains(string(b), `"action": "`+a+`"`) {
				seen[a] = true
			}
		}
	}
	if len(seen) != 3 {
		t.Errorf("the golden table lacks an action: %v", seen)
	}
}

// The records a domain publishes for MTA-STS and TLS reports.
func TestPublishRecordsGolden(t *testing.T) {
	code, out, errOut := wehr(t, "mtasts", "record", "example.net", "--mode", "enforce", "--mx", "mx1.example.net,*.mx.example.net", "--max-age", "168h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	code, out2, errOut := wehr(t, "tlsrpt", "record", "example.net.", "--rua", "mailto:tls-reports@example.net")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	golden(t, "publish-records.txt", []byte(out+out2))
	for _, bad := range [][]string{
		{"mtasts", "record", "example.net", "--mode", "enforce"},
		{"mtasts", "record", "example.net", "--mode", "enforce", "--mx", "a.*.example"},
		{"mtasts", "record", "example.net", "--mode", "report", "--mx", "mx.example.net"},
		{"tlsrpt", "record", "example.net", "--rua", "tls@example.net"},
	} {
		if code, _, errOut := wehr(t, bad...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, %q; want 2 and a reason", bad, code, errOut)
		}
	}
}
