package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// inFile reads a key straight from the file, past the write-back memory.
func inFile(t *testing.T, e *Embedded, key string) bool {
	t.Helper()
	var ok bool
	e.db.View(func(tx *bolt.Tx) error { //nolint:errcheck
		ok = tx.Bucket(bucketKV).Get([]byte(key)) != nil
		return nil
	})
	return ok
}

// stopped opens an embedded store whose background flushes do not run,
// so the test decides when the write-back memory is committed.
func stopped(t *testing.T) *Embedded {
	t.Helper()
	e, err := OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	close(e.stop)
	e.done.Wait()
	e.stop = make(chan struct{})
	t.Cleanup(func() { e.Close() })
	return e
}

func TestWritebackDurableAtOnce(t *testing.T) {
	ctx := context.Background()
	e := stopped(t)
	// A DMARC report row is in the file as soon as the call returns...
	if _, err := e.Counters(ctx, "rrow:example.org:2026120100:k", []int64{1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if !inFile(t, e, "rrow:example.org:2026120100:k") {
		t.Fatal("a report row waits in memory: a crash would lose it")
	}
	// ...greylisting waits for the next flush, and reads see it before.
	p := GreylistPolicy{Delay: time.Minute, Window: time.Hour, Keep: time.Hour}
	now := time.Now()
	if _, err := e.Greylist(ctx, "grey:t", now, p); err != nil {
		t.Fatal(err)
	}
	if inFile(t, e, "grey:t") {
		t.Fatal("greylist write committed at once")
	}
	g, err := e.Greylist(ctx, "grey:t", now.Add(2*time.Minute), p)
	if err != nil || !g.Passed {
		t.Fatalf("the second attempt did not see the first: %+v %v", g, err)
	}
	if err := e.flush(); err != nil {
		t.Fatal(err)
	}
	if !inFile(t, e, "grey:t") {
		t.Fatal("not committed by the flush")
	}
	// A deletion waits too, and hides the committed value meanwhile.
	e.Delete(ctx, "grey:t") //nolint:errcheck
	if _, ok, _ := e.Get(ctx, "grey:t"); ok {
		t.Fatal("deleted key still read")
	}
	if ops := []Op{{Key: "grey:t"}}; e.Do(ctx, ops) != nil || ops[0].Value != nil {
		t.Fatal("deleted key still read by Do")
	}
	e.flush() //nolint:errcheck
	if inFile(t, e, "grey:t") {
		t.Fatal("deletion not committed")
	}
}

// TestWritebackFailingCommits: while commits fail (a full disk), writes
// stay readable and are retried; past maxPending, writes fail with
// ErrUnavailable rather than memory growing; once commits work again,
// nothing written is lost.
func TestWritebackFailingCommits(t *testing.T) {
	ctx := context.Background()
	e := stopped(t)
	good := e.db
	roPath := filepath.Join(t.TempDir(), "ro.db")
	ro, err := bolt.Open(roPath, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	ro.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucketKV); return err }) //nolint:errcheck
	ro.Close()
	if ro, err = bolt.Open(roPath, 0o600, &bolt.Options{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	e.db = ro // every Update fails: read-only
	for i := range 100 {
		if _, err := e.Incr(ctx, fmt.Sprintf("rate:%d", i), 1, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.flush(); err == nil {
		t.Fatal("commit to a read-only file succeeded")
	}
	// Retried, merged under newer writes.
	e.Incr(ctx, "rate:7", 1, time.Hour) //nolint:errcheck
	if v, _, _ := e.Get(ctx, "rate:7"); string(v) != "2" {
		t.Fatalf("rate:7 = %q while commits fail", v)
	}
	e.flush() //nolint:errcheck
	var failed error
	for i := 100; i < maxPending+shards*2 && failed == nil; i++ {
		_, failed = e.Incr(ctx, fmt.Sprintf("rate:%d", i), 1, time.Hour)
	}
	if !errors.Is(failed, ErrUnavailable) {
		t.Fatalf("writes kept piling up: %v", failed)
	}
	t.Log(failed)
	e.db = good
	if err := e.flush(); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := e.Get(ctx, "rate:7"); string(v) != "2" || !inFile(t, e, "rate:7") || !inFile(t, e, "rate:99") {
		t.Fatalf("lost while commits failed: rate:7 = %q", v)
	}
	if _, err := e.Incr(ctx, "rate:x", 1, time.Hour); err != nil {
		t.Fatalf("writes still refused after a commit: %v", err)
	}
}

// TestWritebackAtomic: concurrent read-modify-writes of one key lose
// nothing while flushes run between them.
func TestWritebackAtomic(t *testing.T) {
	ctx := context.Background()
	e := stopped(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				e.Counters(ctx, "rep:192.0.2.1", []int64{1, 0}, time.Hour) //nolint:errcheck
				e.Window(ctx, "rate:x", time.Now(), time.Hour, 1)          //nolint:errcheck
				if i%50 == 0 {
					e.flush() //nolint:errcheck
				}
			}
		}()
	}
	wg.Wait()
	if c, _ := e.Counters(ctx, "rep:192.0.2.1", nil, 0); len(c) == 0 || c[0] != 4000 {
		t.Fatalf("counters %v, want 4000", c)
	}
	if n, _ := e.Window(ctx, "rate:x", time.Now(), time.Hour, 0); n != 4000 {
		t.Fatalf("window %d, want 4000", n)
	}
}

// TestWritebackReopen: what waited in memory is in the file after Close.
func TestWritebackReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	e, err := OpenEmbedded(path)
	if err != nil {
		t.Fatal(err)
	}
	e.Set(ctx, "grey-ok:192.0.2.0/24", []byte("3"), time.Hour) //nolint:errcheck
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err = OpenEmbedded(path); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if v, ok, _ := e.Get(ctx, "grey-ok:192.0.2.0/24"); !ok || string(v) != "3" {
		t.Fatalf("lost at close: %q", v)
	}
}

// TestNoteFlush: a failing commit is logged at once, not again on every
// retry, and its end is logged too.
func TestNoteFlush(t *testing.T) {
	e := stopped(t)
	var buf bytes.Buffer
	e.SetLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	var f flushFailure
	f = e.noteFlush(errors.New("no space left on device"), f)
	for range 10 {
		f = e.noteFlush(errors.New("no space left on device"), f)
	}
	if n := strings.Count(buf.String(), "cannot save to the store file"); n != 1 {
		t.Fatalf("%d failure lines, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "no space left on device") || !strings.Contains(buf.String(), "level=ERROR") {
		t.Errorf("the failure line lacks its error or level:\n%s", buf.String())
	}
	f.logged = f.logged.Add(-time.Minute) // a minute on: said again
	f = e.noteFlush(errors.New("no space left on device"), f)
	if n := strings.Count(buf.String(), "cannot save to the store file"); n != 2 {
		t.Fatalf("%d failure lines after a minute, want 2", n)
	}
	f = e.noteFlush(nil, f)
	if !strings.Contains(buf.String(), "saving to the store file again") || !f.since.IsZero() {
		t.Errorf("recovery not logged or state not reset:\n%s", buf.String())
	}
	buf.Reset()
	e.noteFlush(nil, f)
	if buf.Len() != 0 {
		t.Errorf("a commit that works is logged: %s", buf.String())
	}
}

// TestGreyRecordForms: greylisting records are written in binary and
// read back; those of files written before (JSON) are still read, and a
// damaged one is a new entry, not an error.
func TestGreyRecordForms(t *testing.T) {
	r := greyRecord{First: 1764662400123456789, Last: 1764662500000000000, Passed: true, Count: 7}
	if got, ok := parseGreyRecord(r.append(nil)); !ok || got != r {
		t.Errorf("binary round trip: %+v %v", got, ok)
	}
	if got, ok := parseGreyRecord([]byte(`{"First":1764662400123456789,"Last":1764662500000000000,"Passed":true,"Count":7}`)); !ok || got != r {
		t.Errorf("JSON of earlier files: %+v %v", got, ok)
	}
	bad := r.append(nil)
	bad[17] = 9
	for _, v := range [][]byte{nil, {greyV1}, bad, r.append(nil)[:25], []byte("{broken")} {
		if _, ok := parseGreyRecord(v); ok {
			t.Errorf("%q parsed", v)
		}
	}
}
