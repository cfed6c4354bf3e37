//go:build !race

// Memory is measured without the race detector (its shadow memory is not
// the program's): make test builds this file in its second, race-free
// run; the -race run does not compile it.

package dmarcreport

import (
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
)

// A report of 100,000 records is ingested with the heap staying under
// 64 MiB above where it started: records go to the store in chunks of
// ChunkRecords as they are read.
func TestIngestMemory(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(genReport(pw, "Big", "100k", 100_000)) }()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	sample := &sampleStore{Store: st, every: 40, sample: func() {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
	}}
	in, err := Ingest(ctx, sample, pr, Limits{}, time.Now())
	if err != nil || in.Records != 100_000 {
		t.Fatalf("%+v %v", in, err)
	}
	grew := int64(peak) - int64(base)
	t.Logf("100000 records (%d messages): heap grew by at most %.1f MiB", in.Messages, float64(grew)/(1<<20))
	if grew > 64<<20 {
		t.Errorf("heap grew by %d MiB", grew>>20)
	}
}

// sampleStore calls sample on every every-th write.
type sampleStore struct {
	store.Store
	n, every int
	sample   func()
}

func (s *sampleStore) Set(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	s.n++
	if s.n%s.every == 0 {
		s.sample()
	}
	return s.Store.Set(ctx, k, v, ttl)
}
