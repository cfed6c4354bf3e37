package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/wehr/wehr/resolver/dnstest"
)

const messageZone = `
_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:d@bank.example"
bank.example.        300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
evil.example.        300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
bank.example.        300 IN MX 10 mx.bank.example.
`

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestCheckMessageJSON(t *testing.T) {
	srv := dnstest.New(t, messageZone)
	cfg := emptyConfig(t, "authserv_id: mx.test\ndmarc:\n  reference_url: https://mx.test/why\n")
	msg := filepath.Join(t.TempDir(), "spoof.eml")
	if err := os.WriteFile(msg, []byte("From: CEO <ceo@bank.example>\nTo: you@mx.test\nSubject: pay\n\nPay now.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json", "check", "message",
		"--ip", "203.0.113.5", "--helo", "mail.evil.example", "--mail-from", "x@evil.example", "--rcpt", "you@mx.test", msg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v map[string]any
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&v); err != nil || dec.More() {
		t.Fatalf("not exactly one JSON object: %q %v", stdout, err)
	}
	want := []string{"action", "arc", "auth", "authentication_results", "dkim", "dmarc", "iprev", "smtp_reply", "spf"}
	if got := keysOf(v); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("keys %v, want %v", got, want)
	}
	if got := keysOf(v["arc"].(map[string]any)); strings.Join(got, ",") != "instances,oldest_pass,result,sealers" {
		t.Fatalf("arc keys %v", got)
	}
	dm := v["dmarc"].(map[string]any)
	wantDM := []string{"discovery", "disposition", "dkim_aligned", "from_domain", "org_domain", "overrides", "policy", "policy_domain", "refusal_evidence", "result", "spf_aligned", "testing"}
	if got := keysOf(dm); strings.Join(got, ",") != strings.Join(wantDM, ",") {
		t.Fatalf("dmarc keys %v, want %v", got, wantDM)
	}
	if v["action"] != "reject" || dm["result"] != "fail" || dm["disposition"] != "reject" || dm["policy"] != "reject" || dm["discovery"] != "treewalk" {
		t.Fatalf("verdict %v", v)
	}
	if ev := dm["refusal_evidence"].([]any); len(ev) != 1 || ev[0] != "author_spf_fail" {
		t.Errorf("refusal_evidence %v", ev)
	}
	if dk, ok := v["dkim"].([]any); !ok || len(dk) != 0 {
		t.Errorf("dkim must be [] (not null): %v", v["dkim"])
	}
	if ov, ok := dm["overrides"].([]any); !ok || len(ov) != 0 {
		t.Errorf("overrides must be []: %v", dm["overrides"])
	}
	reply := v["smtp_reply"].(string)
	if !strings.HasPrefix(reply, "550 5.7.1 Message rejected: bank.example publishes DMARC policy reject") || !strings.HasSuffix(reply, "see https://mx.test/why") {
		t.Errorf("smtp_reply %q", reply)
	}
	ar := v["authentication_results"].(string)
	if !strings.HasPrefix(ar, "mx.test; ") || strings.ContainsAny(ar, "\r\n") || strings.HasPrefix(ar, " ") {
		t.Errorf("authentication_results %q: want unfolded, no leading space", ar)
	}
	spf := v["spf"].(map[string]any)
	if spf["result"] != "pass" || spf["domain"] != "evil.example" || spf["scope"] != "mfrom" || len(spf) != 5 {
		t.Errorf("spf %v", spf)
	}
	for _, k := range []string{"iprev", "auth"} {
		if len(v[k].(map[string]any)) != 2 {
			t.Errorf("%s %v", k, v[k])
		}
	}

	// From standard input, no --ip: spf none, and a human summary.
	code, stdout, _ = wehrStdin(t, "From: a@bank.example\r\n\r\nhi\r\n", "--config", cfg, "--resolver", srv.Addr(), "check", "message", "-")
	if code != 0 || !strings.Contains(stdout, "action: quarantine") || !strings.Contains(stdout, "spf:    none") ||
		!strings.Contains(stdout, "Authentication-Results: mx.test;") {
		t.Fatalf("exit %d, text %q", code, stdout)
	}
	// --authserv-id overrides the config.
	code, stdout, _ = wehrStdin(t, "From: a@bank.example\r\n\r\nhi\r\n", "--config", cfg, "--resolver", srv.Addr(), "--json", "check", "message", "--authserv-id", "other.test")
	if code != 0 || !strings.Contains(stdout, `"authentication_results":"other.test; `) {
		t.Fatalf("--authserv-id: %q", stdout)
	}
	// A missing file is a runtime error (issue 12.2; README contract).
	if code, _, _ := wehr(t, "--config", cfg, "check", "message", filepath.Join(t.TempDir(), "nope.eml")); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
}

func TestCheckDomainJSON(t *testing.T) {
	srv := dnstest.New(t, messageZone+`
ed._domainkey.bank.example. 300 IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
sel._domainkey.bank.example. 300 IN TXT "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
`)
	cfg := emptyConfig(t, "")
	code, stdout, stderr := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json", "check", "domain", "bank.example", "--selector", "sel", "--selector", "gone")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keysOf(r), ","); got != "dkim,dmarc,domain,spf,warnings" {
		t.Fatalf("keys %s", got)
	}
	spf := r["spf"].(map[string]any)
	if spf["record"] != "v=spf1 ip4:198.51.100.0/24 -all" || spf["lookups"].(float64) != 0 {
		t.Errorf("spf %v", spf)
	}
	dk := r["dkim"].([]any)
	if len(dk) != 2 {
		t.Fatalf("dkim %v", dk)
	}
	k0 := dk[0].(map[string]any)
	if k0["key_type"] != "rsa" || k0["key_bits"].(float64) != 1024 || len(k0["warnings"].([]any)) != 1 {
		t.Errorf("selector sel: %v", k0)
	}
	if w := dk[1].(map[string]any)["warnings"].([]any); len(w) != 1 || !strings.Contains(w[0].(string), "no key record") {
		t.Errorf("selector gone: %v", w)
	}
	dm := r["dmarc"].(map[string]any)
	if dm["policy_domain"] != "bank.example" || dm["discovery"] != "treewalk" || !strings.HasPrefix(dm["record"].(string), "v=DMARC1") {
		t.Errorf("dmarc %v", dm)
	}
	// A domain with nothing: warnings, exit 0.
	code, stdout, _ = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "check", "domain", "nothing.example")
	if code != 0 || !strings.Contains(stdout, "publishes neither SPF nor DMARC") {
		t.Fatalf("exit %d: %q", code, stdout)
	}
	// Issue 12.2: what is missing reads "not published".
	for _, want := range []string{"spf:    not published", "dmarc:  not published (treewalk)", "dkim:   x: not published"} {
		if _, out, _ := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "check", "domain", "nothing.example", "--selector", "x"); !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// An RSA and an Ed25519 selector: no "ed25519 alone" warning; the
	// Ed25519 selector alone: the warning.
	_, out, _ := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "check", "domain", "bank.example", "--selector", "sel", "--selector", "ed")
	if strings.Contains(out, "ed25519 alone") || !strings.Contains(out, "dkim:   ed: ed25519 256 bits") {
		t.Errorf("rsa + ed25519:\n%s", out)
	}
	if _, out, _ = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "check", "domain", "bank.example", "--selector", "ed"); !strings.Contains(out, "ed25519 alone") {
		t.Errorf("ed25519 alone:\n%s", out)
	}
	// An unreadable message file is a runtime error: exit 1.
	if code, _, _ := wehr(t, "--config", cfg, "check", "message", "/nonexistent"); code != 1 {
		t.Errorf("check message /nonexistent: exit %d, want 1", code)
	}
}
