package dmarcreport

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/store"
)

// Observer counts what happens to rows; *metrics.Metrics is one.
type Observer interface {
	ReportRows(result string, n int64) // written, retried, dropped
}

// Recorder writes the rows of received mail to the store, off the mail
// path: Record only counts the message in memory (never blocks, never
// changes a decision), and Run writes what was counted once a second,
// identical rows as one count, so the store sees one write per distinct
// row and second, not one per message. What the store refuses is kept
// and retried; while it waits, new rows join it, up to a limit of
// distinct rows, past which rows are dropped, counted and logged.
type Recorder struct {
	rows     store.ReportRows
	log      *slog.Logger
	obs      Observer
	now      func() time.Time
	interval time.Duration // between writes (1 s)
	limit    int           // distinct rows waiting at most

	mu    sync.Mutex
	batch map[batchKey]*batchEntry

	written, dropped atomic.Int64
	lastDropLog      atomic.Int64 // unix seconds
}

// batchKey is one row count in the store.
type batchKey struct {
	domain, hour, key string
}

type batchEntry struct {
	at  time.Time
	def []byte
	n   int64
}

// NewRecorder records into st; at most limit distinct rows (10000 if
// 0) wait for the store.
func NewRecorder(st store.Store, limit int, log *slog.Logger, obs Observer) *Recorder {
	if limit <= 0 {
		limit = 10000
	}
	return &Recorder{rows: store.NewReportRows(st), log: log, obs: obs, now: time.Now, interval: time.Second,
		limit: limit, batch: map[batchKey]*batchEntry{}}
}

// Record counts the rows of one verdict.
func (r *Recorder) Record(v *mailauth.Verdict, env mailauth.Envelope) {
	now := r.now()
	for _, row := range Rows(v, env) {
		def, _ := json.Marshal(row)
		k := batchKey{row.Policy.Domain, now.UTC().Format("2006010215"), keyOf(def)}
		full := false
		r.mu.Lock()
		if e, ok := r.batch[k]; ok {
			e.n++
		} else if len(r.batch) < r.limit {
			r.batch[k] = &batchEntry{at: now, def: def, n: 1}
		} else {
			full = true
		}
		r.mu.Unlock()
		if full {
			r.drop(now, row.Policy.Domain)
		}
	}
}

func (r *Recorder) drop(now time.Time, domain string) {
	n := r.dropped.Add(1)
	r.observe("dropped")
	// One line per ten seconds at most, with the running total.
	if last := r.lastDropLog.Load(); now.Unix()-last >= 10 && r.lastDropLog.CompareAndSwap(last, now.Unix()) {
		r.log.Error("dmarcreport: too many report rows wait for the store (it has not answered for a while); rows dropped: "+
			"check the store (wehr doctor), or raise reports.queue", "dropped_total", n, "policy_domain", domain)
	}
}

// Written counts the rows written since the recorder was made.
func (r *Recorder) Written() int64 { return r.written.Load() }

// Dropped counts the rows dropped since the recorder was made.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() }

// Pending is how many distinct rows wait to be written.
func (r *Recorder) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.batch)
}

func (r *Recorder) observe(result string) {
	if r.obs != nil {
		r.obs.ReportRows(result, 1)
	}
}

// Run writes what was recorded until ctx ends; a write the store
// refuses is retried with a growing pause (at most 10 s). At the end,
// the rows still waiting get one more try of up to 5 seconds; what is
// left is logged as lost.
func (r *Recorder) Run(ctx context.Context) {
	defined := map[string]bool{} // rows whose definition is written
	definedSince := r.now()
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	pause, nextTry := 100*time.Millisecond, time.Time{}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := r.writeAll(fctx, defined)
			cancel()
			if n := r.waiting(); n > 0 {
				r.log.Error("dmarcreport: report rows lost at shutdown: the store did not take them", "rows", n, "error", err)
			}
			return
		case now := <-tick.C:
			if now.Before(nextTry) {
				continue
			}
			if now.Sub(definedSince) > 24*time.Hour || len(defined) > 100_000 {
				defined, definedSince = map[string]bool{}, now // definitions expire in the store
			}
			if err := r.writeAll(ctx, defined); err != nil {
				r.observe("retried")
				r.log.Warn("dmarcreport: store unavailable; report rows kept and retried", "error", err,
					"rows_waiting", r.Pending(), "retry_in", pause)
				nextTry = now.Add(pause)
				pause = min(2*pause, 10*time.Second)
				continue
			}
			pause = 100 * time.Millisecond
		}
	}
}

// waiting counts the messages in the rows not written.
func (r *Recorder) waiting() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, e := range r.batch {
		n += e.n
	}
	return n
}

// writeAll takes the rows recorded so far and writes them; on the first
// error, what is not written goes back to wait with what came since.
func (r *Recorder) writeAll(ctx context.Context, defined map[string]bool) error {
	r.mu.Lock()
	batch := r.batch
	r.batch = make(map[batchKey]*batchEntry, len(batch))
	r.mu.Unlock()
	var err error
	for k, e := range batch {
		if err == nil {
			err = r.write(ctx, k, e, defined)
			if err == nil {
				delete(batch, k)
				continue
			}
		}
	}
	if len(batch) > 0 {
		r.mu.Lock()
		for k, e := range batch {
			if cur, ok := r.batch[k]; ok {
				cur.n += e.n
			} else {
				r.batch[k] = e // may pass the limit by what came since: never lost
			}
		}
		r.mu.Unlock()
	}
	return err
}

func (r *Recorder) write(ctx context.Context, k batchKey, e *batchEntry, defined map[string]bool) error {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	def := e.def
	if defined[k.key] {
		def = nil
	}
	if err := r.rows.Add(wctx, k.domain, e.at, k.key, def, e.n); err != nil {
		return err
	}
	defined[k.key] = true
	r.written.Add(e.n)
	if r.obs != nil {
		r.obs.ReportRows("written", e.n)
	}
	return nil
}
