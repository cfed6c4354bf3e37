package store

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The embedded store's writes to state that rebuilds itself (greylists,
// reputation, rates, transactions, pass history, failed logins) are kept
// in memory and committed to the file together, every flushEvery, in one
// transaction: a bbolt commit writes pages and was the costliest step of
// a policy request (one per greylisted request), while one commit of a
// few thousand keys costs about what one of a single key does. A killed
// process loses at most the last flushEvery of such writes, which only
// makes greylisting or a rate start over for the few clients concerned.
// Writes to what does not rebuild itself (durable: the DMARC report
// state) and locks are committed at once, as before.
//
// Each key belongs to one of the shards by its name up to the first NUL
// (a sliding window's two buckets are in one shard), and a shard's lock
// is held for the whole read-modify-write, so every operation stays
// atomic, as the Store contract requires.
const (
	flushEvery = 100 * time.Millisecond
	// maxPending bounds what is kept when commits keep failing (a full
	// disk): past it, writes fail with ErrUnavailable, so that the
	// daemons fall back to their configured defaults instead of memory
	// growing without end.
	maxPending = 200000
	shards     = 16
)

// writeback is the embedded store's memory of uncommitted writes.
type writeback struct {
	seed   maphash.Seed
	shards [shards]wbShard
	// flushMu serialises flushes (the ticker, Sync, Scan, Close).
	flushMu sync.Mutex
	// lastErr is the last commit's failure, nil once one succeeds.
	errMu   sync.Mutex
	lastErr error
}

type wbShard struct {
	mu sync.Mutex
	// dirty are the writes since the last flush began; flushing those
	// of the flush under way, or of one that failed (kept, and merged
	// under newer writes by the next). A nil record is a deletion.
	dirty, flushing map[string][]byte
}

func newWriteback() *writeback {
	w := &writeback{seed: maphash.MakeSeed()}
	for i := range w.shards {
		w.shards[i].dirty = map[string][]byte{}
	}
	return w
}

func (w *writeback) shard(key string) *wbShard {
	if i := strings.IndexByte(key, 0); i >= 0 {
		key = key[:i]
	}
	return &w.shards[maphash.String(w.seed, key)%shards]
}

// kvTxn is what an operation reads and writes: a bbolt bucket inside a
// write transaction (durable keys), or a shard of the write-back memory.
type kvTxn interface {
	// get returns the live record of key (expiry and value), if any.
	get(key string) ([]byte, bool)
	put(key string, rec []byte)
	del(key string)
}

// boltTxn is a write transaction's bucket.
type boltTxn struct {
	e   *Embedded
	b   *bolt.Bucket
	err error
}

func (t *boltTxn) get(key string) ([]byte, bool) { return t.e.live(t.b.Get([]byte(key))) }
func (t *boltTxn) put(key string, rec []byte) {
	if err := t.b.Put([]byte(key), rec); err != nil && t.err == nil {
		t.err = err
	}
}
func (t *boltTxn) del(key string) {
	if err := t.b.Delete([]byte(key)); err != nil && t.err == nil {
		t.err = err
	}
}

// wbTxn reads through a shard's memory to the file, and keeps its
// writes until the operation succeeds.
type wbTxn struct {
	e      *Embedded
	s      *wbShard
	writes map[string][]byte
}

func (t *wbTxn) get(key string) ([]byte, bool) {
	if rec, ok := t.writes[key]; ok {
		return t.e.live(rec)
	}
	if rec, ok := t.s.dirty[key]; ok {
		return t.e.live(rec)
	}
	if rec, ok := t.s.flushing[key]; ok {
		return t.e.live(rec)
	}
	var rec []byte
	t.e.db.View(func(tx *bolt.Tx) error { //nolint:errcheck // a read transaction cannot fail once open
		rec = slices.Clone(tx.Bucket(bucketKV).Get([]byte(key)))
		return nil
	})
	return t.e.live(rec)
}

func (t *wbTxn) put(key string, rec []byte) { t.writes[key] = rec }
func (t *wbTxn) del(key string)             { t.writes[key] = nil }

// live returns a record's value part unless it is missing or expired.
func (e *Embedded) live(rec []byte) ([]byte, bool) {
	if rec == nil {
		return nil, false
	}
	if exp := expiry(rec); exp != 0 && exp <= e.now().UnixNano() {
		return nil, false
	}
	return slices.Clone(rec[8:]), true
}

// modify runs the read-modify-write fn on key (and keys sharing its
// name up to the first NUL) atomically: in a write transaction for a
// durable key, in the write-back memory otherwise.
func (e *Embedded) modify(key string, fn func(t kvTxn) error) error {
	if durable(key) {
		return e.update(func(b *bolt.Bucket) error {
			t := &boltTxn{e: e, b: b}
			if err := fn(t); err != nil {
				return err
			}
			return t.err
		})
	}
	s := e.wb.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.dirty) + len(s.flushing); n >= maxPending/shards {
		return fmt.Errorf("store: %d writes not yet saved to %s (last error: %v): %w", n*shards, e.path, e.wb.err(), ErrUnavailable)
	}
	t := &wbTxn{e: e, s: s, writes: map[string][]byte{}}
	if err := fn(t); err != nil {
		return err
	}
	for k, rec := range t.writes {
		s.dirty[k] = rec
	}
	return nil
}

// read reads key through the write-back memory (a live value, even an
// empty one, is never nil).
func (e *Embedded) read(key string) ([]byte, bool) {
	v := e.readMany([]string{key})[0]
	return v, v != nil
}

// readMany reads keys through the write-back memory, those it does not
// hold in one read transaction.
func (e *Embedded) readMany(keys []string) [][]byte {
	out := make([][]byte, len(keys))
	var fromFile []int
	for i, k := range keys {
		if durable(k) {
			fromFile = append(fromFile, i)
			continue
		}
		s := e.wb.shard(k)
		s.mu.Lock()
		rec, ok := s.dirty[k]
		if !ok {
			rec, ok = s.flushing[k]
		}
		s.mu.Unlock()
		if !ok {
			fromFile = append(fromFile, i)
			continue
		}
		out[i], _ = e.live(rec)
	}
	if len(fromFile) > 0 {
		e.db.View(func(tx *bolt.Tx) error { //nolint:errcheck
			b := tx.Bucket(bucketKV)
			for _, i := range fromFile {
				out[i], _ = e.live(b.Get([]byte(keys[i])))
			}
			return nil
		})
	}
	return out
}

// pending counts the writes not yet saved.
func (w *writeback) pending() int {
	n := 0
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		n += len(s.dirty) + len(s.flushing)
		s.mu.Unlock()
	}
	return n
}

func (w *writeback) err() error {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return w.lastErr
}

func (w *writeback) setErr(err error) {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	w.lastErr = err
}

// flush commits the write-back memory to the file in one transaction.
// On failure the writes stay in memory (readable, and retried by the
// next flush).
func (e *Embedded) flush() error {
	w := e.wb
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	batch := map[string][]byte{}
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		if len(s.dirty) > 0 {
			if s.flushing == nil {
				s.flushing = s.dirty
			} else {
				for k, rec := range s.dirty { // newer than a failed flush's
					s.flushing[k] = rec
				}
			}
			s.dirty = map[string][]byte{}
		}
		for k, rec := range s.flushing {
			batch[k] = rec
		}
		s.mu.Unlock()
	}
	if len(batch) == 0 {
		return nil
	}
	keys := make([]string, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	slices.Sort(keys) // bbolt writes sorted keys fastest
	err := e.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV)
		for _, k := range keys {
			var err error
			if rec := batch[k]; rec == nil {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), rec)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("store: saving %d writes to %s: %w", len(keys), e.path, err)
		w.setErr(err)
		return err
	}
	w.setErr(nil)
	for i := range w.shards {
		s := &w.shards[i]
		s.mu.Lock()
		s.flushing = nil
		s.mu.Unlock()
	}
	return nil
}
