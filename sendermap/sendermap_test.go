package sendermap

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `# customers
alice@example.test   alice@example.test, @example.test
shop                 shop.example.org .shop.example.org  # and subdomains
SHOP                 help@other.example
relay                *
192.0.2.0/24         example.net
2001:db8::/32        example.net
198.51.100.7         newsletter@example.com
`

func TestAllowed(t *testing.T) {
	m, err := Parse("sample", strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, ip, addr string
		ok             bool
		why            string
	}{
		{"alice@example.test", "", "alice@example.test", true, "may use"},
		{"Alice@Example.TEST", "", "bob@EXAMPLE.test", true, "@example.test"},
		{"alice@example.test", "", "alice@evil.example", false, "may not use alice@evil.example"},
		{"shop", "", "orders@shop.example.org", true, ""},
		{"shop", "", "orders@eu.shop.example.org", true, ".shop.example.org"},
		{"shop", "", "orders@example.org", false, ""},
		{"shop", "", "help@other.example", true, ""},
		{"shop", "", "sales@other.example", false, ""},
		{"relay", "", "anyone@anywhere.example", true, "*"},
		{"mallory", "", "a@example.test", false, "no entry"},
		// Network entries are for unauthenticated clients only.
		{"", "192.0.2.55", "web@example.net", true, "192.0.2.0/24"},
		{"", "2001:db8::5", "web@example.net", true, ""},
		{"", "::ffff:192.0.2.55", "web@example.net", true, ""},
		{"", "192.0.2.55", "web@example.test", false, "may not use"},
		{"", "198.51.100.7", "newsletter@example.com", true, ""},
		{"", "198.51.100.7", "ceo@example.com", false, ""},
		{"", "203.0.113.1", "web@example.net", false, "in no network"},
		{"mallory", "192.0.2.55", "web@example.net", false, "no entry"},
		{"alice@example.test", "", "not-an-address", false, "not an address"},
	}
	for _, tc := range tests {
		ok, why := m.Allowed(tc.user, net.ParseIP(tc.ip), tc.addr)
		if ok != tc.ok || !strings.Contains(why, tc.why) {
			t.Errorf("Allowed(%q, %s, %s) = %v %q, want %v %q", tc.user, tc.ip, tc.addr, ok, why, tc.ok, tc.why)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{"alice\n", "alice not..valid\n", "alice localhost\n", "alice <x@y.z>\n"} {
		if _, err := Parse("f", strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "f:1:") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestHolderReload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "senders")
	os.WriteFile(p, []byte("alice a@example.test\n"), 0o644) //nolint:errcheck
	h, err := NewHolder(p)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.Map().Allowed("alice", nil, "b@example.test"); ok {
		t.Fatal("b allowed before reload")
	}
	os.WriteFile(p, []byte("alice @example.test\n"), 0o644) //nolint:errcheck
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := h.Map().Allowed("alice", nil, "b@example.test"); !ok {
		t.Fatal("reload not applied")
	}
	// A broken file keeps the old map.
	os.WriteFile(p, []byte("alice\n"), 0o644) //nolint:errcheck
	if err := h.Reload(); err == nil {
		t.Fatal("broken file accepted")
	}
	if ok, _ := h.Map().Allowed("alice", nil, "b@example.test"); !ok {
		t.Fatal("old map lost after a failed reload")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add("a *\n1.2.3.0/24 x@y.z\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := Parse("f", strings.NewReader(text))
		if err != nil {
			return
		}
		// Whatever parses answers without panicking.
		m.Allowed("a", net.ParseIP("1.2.3.4"), "x@y.z")
		m.Allowed("", net.ParseIP("1.2.3.4"), "x@y.z")
	})
}
