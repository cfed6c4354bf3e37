package dmarcreport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/store"
)

// BenchmarkRecord is what the milter pays per message for reporting:
// the rows made and queued (the store writes happen elsewhere).
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(store.Down{Err: errors.New("bench")}, 10, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	v := verdict(mailauth.DMARCFail, "reject", "reject", []string{"mailto:d@bank.example"})
	b.ReportAllocs()
	for b.Loop() {
		r.Record(v, env)
	}
}

// Reports ingested per second: a gzipped report of 100 records (the
// size most reporters send) into the embedded store, each one new.
func BenchmarkIngest(b *testing.B) {
	st := open(b)
	ctx := context.Background()
	reps := make([][]byte, 64)
	for i := range reps {
		reps[i] = gz(report(b, "Org", fmt.Sprint("r", i), 100))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A new report id each time: the first 64 by content, the rest
		// by organisation.
		in := bytes.NewReader(reps[i%64])
		if i >= 64 {
			b.StopTimer()
			in = bytes.NewReader(gz(report(b, fmt.Sprint("Org", i), "r", 100)))
			b.StartTimer()
		}
		if _, err := Ingest(ctx, st, in, Limits{}, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
}
