package authpolicy

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

// benchAllow sends Dovecot's requests (an allow, then a failed or
// successful report, as one login makes them) from 8 clients over
// HTTP keep-alive, and reports decisions per second and the latency of
// one request, p50 and p99.
func benchAllow(b *testing.B, st store.Store) {
	p := New(Default(), st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(NewServer(p, slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	b.SetParallelism(4)
	n := 0
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		mu.Lock()
		n++
		id := n
		mu.Unlock()
		i := 0
		for pb.Next() {
			i++
			remote := fmt.Sprintf("10.%d.%d.%d", id, i>>8&255, i&255)
			cmd, body := "allow", body(fmt.Sprintf("user%d@example.test", i%1000), remote)
			if i%2 == 0 {
				cmd, body = "report", report(fmt.Sprintf("user%d@example.test", i%1000), remote, i%4 == 0)
			}
			start := time.Now()
			resp, err := client.Post(srv.URL+"/?command="+cmd, "application/json", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
}

func BenchmarkDecisionsEmbedded(b *testing.B) {
	st, err := store.OpenEmbedded(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchAllow(b, st)
}

func BenchmarkDecisionsRedis(b *testing.B) {
	r := storetest.StartRedis(b, "")
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchAllow(b, st)
}
