package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wehr/wehr/resolver/dnstest"
)

func TestDKIMCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := emptyConfig(t, "")
	code, out, stderr := wehr(t, "--config", cfg, "dkim", "--dir", dir, "keygen", "example.org")
	if code != 0 {
		t.Fatalf("keygen: %d %s", code, stderr)
	}
	for _, want := range []string{"2026", "-rsa._domainkey.example.org. IN TXT ( \"v=DKIM1; k=rsa; p=", "-ed._domainkey.example.org. IN TXT ( \"v=DKIM1; k=ed25519; p=", "for web panels"} {
		if !strings.Contains(out, want) {
			t.Errorf("keygen output lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ = wehr(t, "--config", cfg, "dkim", "--dir", dir, "keygen", "example.net", "--selector", "s1", "--algorithm", "rsa"); code != 0 || !strings.Contains(out, "s1._domainkey.example.net") {
		t.Fatalf("keygen --selector: %d %s", code, out)
	}
	if code, _, stderr = wehr(t, "--config", cfg, "dkim", "--dir", dir, "keygen", "example.net", "--algorithm", "dsa"); code != 2 || !strings.Contains(stderr, "--algorithm") {
		t.Fatalf("bad algorithm: %d %s", code, stderr)
	}
	code, out, _ = wehr(t, "--config", cfg, "--json", "dkim", "--dir", dir, "list")
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("list: %d %s", code, out)
	}
	var row map[string]any
	json.Unmarshal([]byte(strings.Split(out, "\n")[0]), &row) //nolint:errcheck
	if row["state"] != "active" || row["domain"] == nil {
		t.Fatalf("list row %v", row)
	}

	// Publish the RSA key of example.net, check status, then sign a
	// message and verify it with check message.
	code, out, _ = wehr(t, "--config", cfg, "--json", "dkim", "--dir", dir, "dns-record", "example.net")
	var rec map[string]string
	if err := json.Unmarshal([]byte(out), &rec); code != 0 || err != nil {
		t.Fatalf("dns-record: %d %s", code, out)
	}
	srv := dnstest.New(t, `_dmarc.example.net. 300 IN TXT "v=DMARC1; p=reject"`)
	srv.AddTXT(rec["name"], rec["record"])
	code, out, _ = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "dkim", "--dir", dir, "status", "example.net")
	if code != 0 || !strings.Contains(out, "published=true") {
		t.Fatalf("status: %d %s", code, out)
	}
	key := filepath.Join(dir, "example.net", "s1.pem")
	code, signed, stderr := wehrStdin(t, "From: a@example.net\nTo: b@example.org\nSubject: hi\n\nbody\n", "--config", cfg,
		"dkim", "sign", "--domain", "example.net", "--selector", "s1", "--key", key, "-")
	if code != 0 || !strings.HasPrefix(signed, "DKIM-Signature: ") {
		t.Fatalf("sign: %d %s %s", code, signed, stderr)
	}
	code, out, _ = wehrStdin(t, signed, "--config", cfg, "--resolver", srv.Addr(), "--json", "check", "message")
	if code != 0 || !strings.Contains(out, `"dkim":[{"result":"pass"`) || !strings.Contains(out, `"dkim_aligned":true`) {
		t.Fatalf("the signed message does not verify: %s", out)
	}
	// A key readable by others is refused, naming the file.
	os.Chmod(key, 0o644) //nolint:errcheck
	code, _, stderr = wehrStdin(t, "From: a@example.net\n\nx\n", "--config", cfg, "dkim", "sign", "--domain", "example.net", "--selector", "s1", "--key", key)
	if code != 2 || !strings.Contains(stderr, key) || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("loose key: %d %s", code, stderr)
	}
	// No key directory at all: a usage error that says what to do.
	if code, _, stderr = wehr(t, "--config", cfg, "dkim", "list"); code != 2 || !strings.Contains(stderr, "dkim.keys_dir") {
		t.Fatalf("no dir: %d %s", code, stderr)
	}
}
