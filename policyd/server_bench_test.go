package policyd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/wehr/wehr/policybench"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

// benchServer measures the whole service as Postfix drives it: the
// greylisting workload of `wehr bench policyd` (every client without
// reverse DNS, so suspicious) over 16 loopback TCP connections, with the
// default settings, a caching resolver and an Info log line per request
// (formatted, then discarded). The load generator shares the CPU.
func benchServer(b *testing.B, st store.Store) {
	srv := dnstest.New(b, "in-addr.arpa. 300 IN SOA ns.test. h.test. 1 3600 600 86400 3600\n")
	rc := resolver.Default()
	rc.ResolvConf, rc.Servers = "", []string{srv.Addr()}
	rc.CacheSize = 50000
	res, err := resolver.New(rc)
	if err != nil {
		b.Fatal(err)
	}
	cfg := Default()
	cfg.Hostname = "mx.test"
	cfg.SkipNetworks = nil
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := NewPipeline(cfg, res, st, log)
	s := NewServer(p, log, time.Minute)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	// Every triplet sent once first: the service as it runs, with its
	// DNS answers cached and the triplets known.
	o := policybench.Options{Network: "tcp", Addr: ln.Addr().String(), Concurrency: 16, Triplets: 20000, Requests: b.N}
	if err := policybench.Warmup(ctx, o); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	rep, err := policybench.Run(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if rep.Errors > 0 {
		b.Fatalf("%d errors: %s", rep.Errors, rep.FirstError)
	}
	if rep.Actions["450"] == 0 {
		b.Fatalf("nothing greylisted: %v", rep.Actions)
	}
	b.ReportMetric(rep.PerSecond, "req/s")
	b.ReportMetric(float64(rep.P99.Microseconds())/1000, "p99-ms")
}

func BenchmarkServerEmbedded(b *testing.B) {
	st, err := store.OpenEmbedded(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchServer(b, st)
}

func BenchmarkServerRedis(b *testing.B) {
	r := storetest.StartRedis(b, "")
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchServer(b, st)
}
