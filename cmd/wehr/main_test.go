package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wehr/wehr/internal/spfsuite"
	"github.com/wehr/wehr/resolver/dnstest"
)

// wehr runs one command line in-process.
func wehr(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return wehrStdin(t, "", args...)
}

// wehrStdin runs one command line with stdin.
func wehrStdin(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// emptyConfig writes a config file so that tests never read the
// machine's /etc/wehr/wehr.yaml.
func emptyConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "wehr.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The whole RFC 7208 suite through `wehr check spf --json --resolver`.
func TestCheckSPFSuite(t *testing.T) {
	scenarios, err := spfsuite.Load(spfsuite.RFC7208)
	if err != nil {
		t.Fatal(err)
	}
	cfg := emptyConfig(t, "dns:\n  timeout: 200ms\n  attempts: 1\nspf:\n  default_explanation: DEFAULT\nhostname: localdomain.org\n")
	var outs []spfsuite.Outcome
	for _, sc := range scenarios {
		srv := dnstest.New(t, "")
		if err := sc.Serve(srv); err != nil {
			t.Fatal(err)
		}
		for _, tc := range sc.Tests {
			code, stdout, stderr := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json",
				"check", "spf", "--ip", tc.Host, "--helo", tc.Helo, "--mail-from", tc.MailFrom)
			if code != 0 {
				t.Fatalf("%s: exit %d: %s", tc.Name, code, stderr)
			}
			var obj map[string]string
			dec := json.NewDecoder(strings.NewReader(stdout))
			if err := dec.Decode(&obj); err != nil {
				t.Fatalf("%s: output %q: %v", tc.Name, stdout, err)
			}
			if dec.More() {
				t.Fatalf("%s: more than one JSON value in %q", tc.Name, stdout)
			}
			checkSPFJSON(t, tc.Name, obj)
			outs = append(outs, spfsuite.Outcome{Test: tc, Result: obj["result"], Explanation: obj["explanation"], Error: obj["error"]})
		}
	}
	matched, expChecked, expMatched, misses := spfsuite.Report(outs)
	t.Logf("%d/%d results match; explanations %d/%d", matched, len(outs), expMatched, expChecked)
	for _, m := range misses {
		t.Logf("miss: %s", m)
	}
	if len(outs) != 203 || matched < 195 {
		t.Fatalf("%d/%d results match, want at least 195/203", matched, len(outs))
	}
}

// checkSPFJSON holds the CLI contract: exactly these keys, explanation
// only on fail, error only on temperror and permerror.
func checkSPFJSON(t *testing.T, name string, obj map[string]string) {
	t.Helper()
	want := []string{"result", "scope", "domain", "explanation", "error"}
	if len(obj) != len(want) {
		t.Errorf("%s: keys %v, want exactly %v", name, obj, want)
	}
	for _, k := range want {
		if _, ok := obj[k]; !ok {
			t.Errorf("%s: key %q missing", name, k)
		}
	}
	switch obj["result"] {
	case "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror":
	default:
		t.Errorf("%s: result %q", name, obj["result"])
	}
	if obj["scope"] != "mfrom" {
		t.Errorf("%s: scope %q", name, obj["scope"])
	}
	if (obj["explanation"] != "") != (obj["result"] == "fail") {
		t.Errorf("%s: explanation %q with result %s", name, obj["explanation"], obj["result"])
	}
	if (obj["error"] != "") != (obj["result"] == "temperror" || obj["result"] == "permerror") {
		t.Errorf("%s: error %q with result %s", name, obj["error"], obj["result"])
	}
}

func TestCheckSPFNullSender(t *testing.T) {
	srv := dnstest.New(t, `mx.example.net. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`)
	cfg := emptyConfig(t, "")
	for _, null := range []string{"", "<>"} {
		code, stdout, stderr := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json",
			"check", "spf", "--ip", "192.0.2.7", "--helo", "mx.example.net", "--mail-from", null)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var obj map[string]string
		if err := json.Unmarshal([]byte(stdout), &obj); err != nil {
			t.Fatal(err)
		}
		if obj["result"] != "pass" || obj["domain"] != "mx.example.net" || obj["scope"] != "mfrom" {
			t.Fatalf("null sender %q: %v", null, obj)
		}
	}
	// Text output names the result and the identity.
	code, stdout, _ := wehr(t, "--config", cfg, "--resolver", srv.Addr(),
		"check", "spf", "--ip", "198.51.100.7", "--helo", "mx.example.net", "--mail-from", "<>")
	if code != 0 || !strings.Contains(stdout, "spf=fail") || !strings.Contains(stdout, "postmaster@mx.example.net") {
		t.Fatalf("exit %d, text output %q", code, stdout)
	}
}

func TestExitCodes(t *testing.T) {
	good := emptyConfig(t, "authserv_id: mx.example.net\n")
	unknown := emptyConfig(t, "dns:\n  timout: 2s\n")
	badValue := emptyConfig(t, "spf:\n  timeout: 5\n")
	missing := filepath.Join(t.TempDir(), "none.yaml")
	srv := dnstest.New(t, "")

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"config check good", []string{"config", "check", good}, 0, ""},
		{"config check unknown key", []string{"config", "check", unknown}, 2, unknown + ":2: dns.timout: unknown key"},
		{"config check bad value", []string{"config", "check", badValue}, 2, badValue + ":2: spf.timeout:"},
		{"config check missing file", []string{"config", "check", missing}, 2, "no such file"},
		{"global config missing", []string{"--config", missing, "check", "spf", "--ip", "192.0.2.1", "--mail-from", "a@b.example"}, 2, "no such file"},
		{"global config bad", []string{"--config", unknown, "check", "spf", "--ip", "192.0.2.1", "--mail-from", "a@b.example"}, 2, "dns.timout"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown flag", []string{"check", "spf", "--nope"}, 2, "unknown flag"},
		{"missing required flag", []string{"--config", good, "check", "spf", "--ip", "192.0.2.1"}, 2, "mail-from"},
		{"bad ip", []string{"--config", good, "check", "spf", "--ip", "not-an-ip", "--mail-from", "a@b.example"}, 2, "not an IP address"},
		{"bad resolver", []string{"--config", good, "--resolver", "dns.example", "check", "spf", "--ip", "192.0.2.1", "--mail-from", "a@b.example"}, 2, "--resolver"},
		{"null sender without helo", []string{"--config", good, "check", "spf", "--ip", "192.0.2.1", "--mail-from", ""}, 2, "--helo"},
		{"verdict is success", []string{"--config", good, "--resolver", srv.Addr(), "check", "spf", "--ip", "192.0.2.1", "--mail-from", "a@b.example"}, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := wehr(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tc.stderr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	code, stdout, _ := wehr(t, "config", "defaults")
	if code != 0 || !strings.Contains(stdout, "authserv_id:") || !strings.Contains(stdout, "# ") {
		t.Fatalf("exit %d, output %q", code, stdout)
	}
	// What it prints is a valid config.
	p := emptyConfig(t, stdout)
	if code, _, stderr := wehr(t, "config", "check", p); code != 0 {
		t.Fatalf("printed defaults do not check: %s", stderr)
	}
}

// DNS that never answers is not a runtime error for a check: SPF turns it
// into temperror, which is a verdict, so the exit status is 0.
func TestCheckSPFTemperror(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // bound, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cfg := emptyConfig(t, "dns:\n  timeout: 100ms\n  attempts: 1\n")
	code, stdout, stderr := wehr(t, "--config", cfg, "--resolver", pc.LocalAddr().String(), "--json",
		"check", "spf", "--ip", "192.0.2.1", "--mail-from", "a@b.example")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var obj map[string]string
	if err := json.Unmarshal([]byte(stdout), &obj); err != nil {
		t.Fatal(err)
	}
	if obj["result"] != "temperror" || obj["error"] == "" {
		t.Fatalf("got %v, want temperror with an error", obj)
	}
}

// doctor fails, with a fix for each failure, when nothing runs.
func TestDoctorNothingRunning(t *testing.T) {
	dir := t.TempDir()
	srv := dnstest.New(t, "")
	cfg := emptyConfig(t, fmt.Sprintf(`milter: {listen: "unix:%s/milter.sock"}
policyd: {listen: "unix:%s/policy.sock"}
store: {path: %s/wehr.db, admin_socket: %s/admin.sock}
`, dir, dir, dir, dir))
	code, out, stderr := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "doctor", "--no-postfix")
	if code != 1 || !strings.Contains(stderr, "3 checks failed") {
		t.Fatalf("exit %d, stderr %q, want 1 and 3 failures:\n%s", code, stderr, out)
	}
	for _, want := range []string{"FAIL  milter", "FAIL  policyd", "FAIL  store", "-> start wehr serve", "ok    dns"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json", "doctor", "--no-postfix")
	var f struct{ Check, Status, Fix string }
	if code != 1 || json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &f) != nil || f.Check != "config" || f.Status != "ok" {
		t.Fatalf("json: exit %d, first line %+v:\n%s", code, f, out)
	}
}

// Shell completions and man pages come from the command tree.
func TestCompletionAndMan(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_wehr", "zsh": "#compdef wehr", "fish": "complete -c wehr"} {
		code, out, stderr := wehr(t, "completion", shell)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("completion %s: %d %q %s", shell, code, out[:min(len(out), 80)], stderr)
		}
	}
	dir := t.TempDir()
	if code, _, stderr := wehr(t, "man", dir); code != 0 {
		t.Fatalf("man: %s", stderr)
	}
	for _, page := range []string{"wehr.1", "wehr-serve.1", "wehr-dmarc-ingest.1", "wehr-authpolicy-reset.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil || !strings.Contains(string(b), ".TH \"WEHR\" \"1\"") {
			t.Errorf("%s: %v %.80q", page, err, b)
		}
	}
}
