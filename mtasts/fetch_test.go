package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA makes a certificate authority and a server certificate signed
// by it for names.
func testCA(t *testing.T, names ...string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

const enforcePolicy = "version: STSv1\nmode: enforce\nmx: mx.good.test\nmax_age: 86400\n"

// policyServer serves a policy per domain, as mta-sts.DOMAIN, on one
// address; its certificate names every test domain but wrongcert.test.
func policyServer(t *testing.T) (*Fetcher, *atomic.Int64) {
	t.Helper()
	var names []string
	for _, d := range []string{"good", "redirect", "big", "html", "slow", "missing", "garbage"} {
		names = append(names, "mta-sts."+d+".test")
	}
	pool, cert := testCA(t, names...)
	hits := new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		switch strings.TrimPrefix(r.Host, "mta-sts.") {
		case "good.test", "wrongcert.test":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte(enforcePolicy))
		case "redirect.test":
			http.Redirect(w, r, "https://mta-sts.good.test/.well-known/mta-sts.txt", http.StatusMovedPermanently)
		case "big.test":
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(enforcePolicy + strings.Repeat("x: y\n", MaxPolicySize/5)))
		case "html.test":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(enforcePolicy))
		case "slow.test":
			time.Sleep(2 * time.Second)
		case "garbage.test":
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("<html>oops</html>"))
		default:
			http.NotFound(w, r)
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes the tests make fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	f := &Fetcher{RootCAs: pool, Timeout: 500 * time.Millisecond, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	return f, hits
}

func TestFetch(t *testing.T) {
	f, _ := policyServer(t)
	ctx := context.Background()
	p, err := f.Fetch(ctx, "good.test")
	if err != nil || p.Mode != Enforce || !p.Match("mx.good.test") || p.MaxAge != 24*time.Hour {
		t.Fatalf("good.test: %+v %v", p, err)
	}
	for domain, want := range map[string]string{
		"redirect.test":  "HTTP 301 Moved Permanently to https://mta-sts.good.test/.well-known/mta-sts.txt (redirects are not followed)",
		"wrongcert.test": "the certificate is not valid for mta-sts.wrongcert.test",
		"big.test":       "more than 65536 bytes",
		"html.test":      `served as "text/html", not text/plain`,
		"slow.test":      "timed out",
		"missing.test":   "HTTP 404",
		"garbage.test":   "not \"key: value\"",
	} {
		_, err := f.Fetch(ctx, domain)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", domain, err, want)
		}
		if err != nil && !errors.Is(err, ErrFetch) && !errors.Is(err, ErrPolicy) {
			t.Errorf("%s: %v wraps neither ErrFetch nor ErrPolicy", domain, err)
		}
	}
	// Without the test CA: nothing is trusted.
	f.RootCAs = x509.NewCertPool()
	if _, err := f.Fetch(ctx, "good.test"); err == nil || !strings.Contains(err.Error(), "not signed by a trusted authority") {
		t.Errorf("untrusted CA: %v", err)
	}
}
