package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/setting"
)

// certFiles writes cert's chain and key as PEM files.
func certFiles(t *testing.T, cert tls.Certificate) (string, string) {
	t.Helper()
	dir := t.TempDir()
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	c, k := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644)
	os.WriteFile(k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return c, k
}

// TestPolicyServer: what we serve for a customer's domain is what our
// own fetcher (strict, as senders are) reads back; other names get no
// certificate and no policy.
func TestPolicyServer(t *testing.T) {
	pool, cert := testCA(t, "mta-sts.served.test")
	cf, kf := certFiles(t, cert)
	cfg := ServeConfig{Listen: "inet:127.0.0.1:443", Policies: []Served{{Domain: "Served.test.", Mode: "enforce", MX: []string{"mx1.served.test", "*.mx.served.test"},
		MaxAge: 7 * 24 * time.Hour, CertFile: cf, KeyFile: kf}}}
	p := setting.New()
	cfg.check(p.Section("mtasts"))
	if l := p.List(); len(l) > 0 {
		t.Fatalf("a sound configuration: %v", l)
	}
	s, err := NewPolicyServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	f := &Fetcher{RootCAs: pool, Timeout: 2 * time.Second, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, ln.Addr().String())
	}}
	got, err := f.Fetch(ctx, "served.test")
	if err != nil || got.Mode != Enforce || !got.Match("mx1.served.test") || !got.Match("a.mx.served.test") || got.MaxAge != 7*24*time.Hour {
		t.Fatalf("fetched %+v %v", got, err)
	}
	if _, err := f.Fetch(ctx, "other.test"); err == nil {
		t.Error("a policy for a domain we do not serve")
	}
}

// TestServeConfigCheck: the mistakes an admin makes are named with the
// key they are under.
func TestServeConfigCheck(t *testing.T) {
	_, cert := testCA(t, "mta-sts.served.test")
	cf, kf := certFiles(t, cert)
	good := Served{Domain: "served.test", Mode: "testing", MX: []string{"mx.served.test"}, MaxAge: time.Hour, CertFile: cf, KeyFile: kf}
	tests := []struct {
		name string
		c    ServeConfig
		want string
	}{
		{"policies without listen", ServeConfig{Policies: []Served{good}}, "serve.listen"},
		{"unix listen", ServeConfig{Listen: "unix:/run/x.sock", Policies: []Served{good}}, "HTTPS"},
		{"certificate for another name", ServeConfig{Listen: "inet:127.0.0.1:443", Policies: []Served{func() Served { s := good; s.Domain = "other.test"; return s }()}}, "mta-sts.other.test"},
		{"bad mode", ServeConfig{Listen: "inet:127.0.0.1:443", Policies: []Served{func() Served { s := good; s.Mode = "report"; return s }()}}, "report"},
		{"no max_age", ServeConfig{Listen: "inet:127.0.0.1:443", Policies: []Served{func() Served { s := good; s.MaxAge = 0; return s }()}}, "max_age"},
		{"twice", ServeConfig{Listen: "inet:127.0.0.1:443", Policies: []Served{good, good}}, "served twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := setting.New()
			tc.c.check(p.Section("mtasts"))
			if l := fmt.Sprint(p.List()); !strings.Contains(l, tc.want) {
				t.Errorf("%s, want a problem with %q", l, tc.want)
			}
		})
	}
}
