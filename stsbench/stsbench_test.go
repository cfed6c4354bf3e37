package stsbench

import (
	"bufio"
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/wehr/wehr/mtasts"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store"
)

// world starts the DNS and policy host of n domains and wehr's socketmap
// server in process, and returns the server's address and the policy
// handler (which counts fetches).
func world(t testing.TB, n int) (string, *PolicyHandler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dns, err := dnstest.Start(ZoneText(n, "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Close)
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &PolicyHandler{}
	go ServePolicies(ctx, hln, ca, h) //nolint:errcheck
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr()}, Timeout: 2 * time.Second, Attempts: 2, CacheSize: 4 * n})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	r := &mtasts.Resolver{DNS: res, Secure: res, Cache: mtasts.StoreCache{P: store.NewStsPolicies(st)},
		Fetcher: &mtasts.Fetcher{RootCAs: pool, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, hln.Addr().String())
		}}}
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := &mtasts.SocketmapServer{Log: log, Lookup: mtasts.PostfixLookup(r, mtasts.NewRecent(time.Minute, 4*n), log)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, ln) //nolint:errcheck
	return ln.Addr().String(), h
}

// The load generator against wehr's socketmap: the cold fill fetches
// every policy once, every answer is the one the domain's policy calls
// for, and the warm run fetches nothing.
func TestFillAndRun(t *testing.T) {
	addr, h := world(t, 300)
	ctx := context.Background()
	o := Options{Network: "tcp", Addr: addr, Concurrency: 4, Domains: 300}
	rep, err := Fill(ctx, o)
	if err != nil || rep.Errors != 0 || rep.Requests != 300 || rep.Wrong != 0 {
		t.Fatalf("fill: %+v %v", rep, err)
	}
	if rep.Answers["secure"] != 270 || rep.Answers["NOTFOUND"] != 30 || h.Served.Load() != 300 {
		t.Fatalf("fill answers %v, %d policies served", rep.Answers, h.Served.Load())
	}
	o.Duration = 300 * time.Millisecond
	rep, err = Run(ctx, o)
	if err != nil || rep.Errors != 0 || rep.Wrong != 0 || rep.Requests == 0 {
		t.Fatalf("run: %+v %v", rep, err)
	}
	if h.Served.Load() != 300 {
		t.Errorf("the warm run fetched %d policies", h.Served.Load()-300)
	}
}

// The hostile variant: a domain outside the workload, a key Postfix
// sends for a next hop, garbage: the right refusals, and the server
// keeps answering.
func TestAskOddKeys(t *testing.T) {
	addr, _ := world(t, 10)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for key, want := range map[string]string{
		"unknown.example":            "NOTFOUND",
		"[mx.d1." + Zone + "]:25":    "NOTFOUND",
		".d1." + Zone:                "NOTFOUND",
		Domain(1):                    "secure",
		Domain(9):                    "NOTFOUND",
		"d-not-a-number." + Zone:     "NOTFOUND",
		"d99999999999999999." + Zone: "NOTFOUND",
	} {
		ans, err := Ask(c, br, "postfix", key)
		if err != nil || classify(ans) != want {
			t.Errorf("%s: %q %v, want %s", key, ans, err, want)
		}
	}
}

// BenchmarkSocketmapWarm: wehr's socketmap answering from a warm cache,
// over 16 connections (the load generator in the same process).
func BenchmarkSocketmapWarm(b *testing.B) {
	const n = 10000
	addr, _ := world(b, n)
	o := Options{Network: "tcp", Addr: addr, Concurrency: 16, Domains: n}
	if rep, err := Fill(context.Background(), o); err != nil || rep.Wrong != 0 || rep.Errors != 0 {
		b.Fatalf("fill: %+v %v", rep, err)
	}
	b.ResetTimer()
	o.Duration = time.Duration(b.N) * 20 * time.Microsecond
	rep, err := Run(context.Background(), o)
	if err != nil || rep.Errors != 0 || rep.Wrong != 0 {
		b.Fatalf("%+v %v", rep, err)
	}
	b.ReportMetric(rep.PerSecond, "lookups/s")
	b.ReportMetric(float64(rep.P99.Microseconds()), "p99-µs")
}
