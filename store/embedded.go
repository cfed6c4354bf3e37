package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Embedded is the store of a single node: a bbolt file that only one
// process can open. Writes to state that rebuilds itself are committed
// every 100 ms, together (writeback.go): a killed process loses at most
// those; the DMARC report state is committed at once. The file is synced
// every second, so a machine that crashes loses at most the last second;
// Sync makes everything written so far durable.
type Embedded struct {
	db   *bolt.DB
	wb   *writeback
	path string
	stop chan struct{}
	done sync.WaitGroup
	now  func() time.Time // real time, for TTLs only
	log  atomic.Pointer[slog.Logger]

	// Moved is set when a damaged store file was moved aside at open:
	// where it went, and MovedWhy why. Salvaged is how many records
	// that do not rebuild themselves (DMARC report rows) were read back
	// from it into the new file; SalvageErr why not, if it failed.
	Moved      string
	MovedWhy   error
	Salvaged   int
	SalvageErr error
}

var bucketKV = []byte("kv")

// OpenEmbedded opens (or creates) the store file. If another process
// holds it, it gives up after a second with an error that says so.
//
// A file that is not a sound store (the machine crashed within the
// second between syncs, or the disk failed) is moved aside to
// PATH.corrupt-TIME and a new store is started, so that mail keeps
// flowing: greylisting, rates and reputation rebuild themselves, and
// the DMARC report rows, which do not, are salvaged from the damaged
// file into the new one (Salvaged). Moved and MovedWhy then say where it
// went and why; the caller logs it.
func OpenEmbedded(path string) (*Embedded, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := openChecked(path)
	var moved string
	var why error
	if errors.Is(err, errDamaged) {
		moved = path + ".corrupt-" + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, moved); rerr != nil {
			return nil, fmt.Errorf("store: %s: %w, and it cannot be moved aside: %w", path, err, rerr)
		}
		why = err
		db, err = openChecked(path)
	}
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is in use by another process (wehr serve owns the embedded store; ops commands reach it through its admin socket, separate daemons need Redis): %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	e := &Embedded{db: db, wb: newWriteback(), path: path, stop: make(chan struct{}), now: time.Now, Moved: moved, MovedWhy: why}
	if moved != "" {
		e.Salvaged, e.SalvageErr = salvageInto(db, moved, time.Now())
		if e.Salvaged > 0 {
			db.Sync() //nolint:errcheck // a failure shows at the next sync
		}
	}
	e.done.Add(1)
	go e.background()
	return e, nil
}

// SetLogger has the store log what happens in its background: commits
// to the file that fail (a full disk) and recover.
func (e *Embedded) SetLogger(l *slog.Logger) { e.log.Store(l) }

// flushFailure is the state of commits failing in a row: since when, and
// when it was last logged (zero: commits succeed).
type flushFailure struct{ since, logged time.Time }

// noteFlush logs a flush's outcome when it changes the state, and a
// failure that goes on once a minute: an admin sees the full disk at
// once and sees when it is over, without a line every 100 ms.
func (e *Embedded) noteFlush(err error, f flushFailure) flushFailure {
	log := e.log.Load()
	now := time.Now()
	switch {
	case err != nil && (f.since.IsZero() || now.Sub(f.logged) >= time.Minute):
		if f.since.IsZero() {
			f.since = now
		}
		f.logged = now
		if log != nil {
			log.Error("store: cannot save to the store file; writes wait in memory and are retried every 100ms "+
				"(past the bound they are refused as \"store unavailable\" and the daemons take their store-down fallback, policyd.on_store_error)",
				"path", e.path, "failing_for", now.Sub(f.since).Round(time.Second), "writes_waiting", e.wb.pending(), "bound", maxPending, "error", err)
		}
	case err == nil && !f.since.IsZero():
		if log != nil {
			log.Info("store: saving to the store file again; the writes that waited are saved",
				"path", e.path, "failed_for", now.Sub(f.since).Round(time.Second))
		}
		f = flushFailure{}
	}
	return f
}

// ErrInUse is wrapped when another process holds the store file.
var ErrInUse = errors.New("store file in use")

// errDamaged marks a store file whose contents are broken.
var errDamaged = errors.New("the store file is damaged")

// openChecked opens the file and checks every page of it, so that a
// damaged store is found now rather than by a panic in bbolt later.
func openChecked(path string) (db *bolt.DB, err error) {
	if err := checkSize(path); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrChecksum) {
			err = fmt.Errorf("%w: %w", errDamaged, err)
		}
		return nil, err
	}
	var first error
	if err := db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() { // read to the end: the checker runs in its own goroutine
			if first == nil {
				first = cerr
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	if first != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %w", errDamaged, first)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketKV)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// checkSize checks, before bbolt maps the file, that it holds every page
// its newest valid meta page counts: bbolt reads pages past the end of a
// truncated file through its memory map, and that is a SIGBUS, not an
// error (issue 10.9). The layout is bbolt's (page header of 16 bytes,
// then magic, version, page size, flags, root bucket, freelist page, page
// count, txid and an FNV-64a checksum of what precedes it).
func checkSize(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return nil // bbolt makes a new store
	}
	const pageHeader, metaLen = 16, 64
	first := make([]byte, pageHeader+metaLen)
	if _, err := f.ReadAt(first, 0); err != nil {
		return fmt.Errorf("%w: %d bytes, too short for a store", errDamaged, size)
	}
	pageSize := int64(binary.LittleEndian.Uint32(first[pageHeader+8:]))
	if pageSize < 512 || pageSize > 1<<20 || pageSize&(pageSize-1) != 0 {
		pageSize = int64(os.Getpagesize()) // meta page 0 is broken: try 1 where bbolt would
	}
	if size < 2*pageSize {
		return fmt.Errorf("%w: %d bytes, shorter than its two meta pages", errDamaged, size)
	}
	var best []byte
	for i := int64(0); i < 2; i++ {
		m := make([]byte, metaLen)
		if _, err := f.ReadAt(m, i*pageSize+pageHeader); err != nil {
			continue
		}
		if binary.LittleEndian.Uint32(m[0:]) != 0xED0CDAED {
			continue
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != binary.LittleEndian.Uint64(m[56:]) {
			continue
		}
		if best == nil || binary.LittleEndian.Uint64(m[48:]) > binary.LittleEndian.Uint64(best[48:]) {
			best = m
		}
	}
	if best == nil {
		return nil // no valid meta page: bbolt says so (ErrInvalid)
	}
	pages := int64(binary.LittleEndian.Uint64(best[40:]))
	if ps := int64(binary.LittleEndian.Uint32(best[8:])); ps != pageSize {
		return fmt.Errorf("%w: the meta pages disagree on the page size", errDamaged)
	}
	if pages < 2 || pages > size/pageSize {
		return fmt.Errorf("%w: truncated: %d bytes, but it counts %d pages of %d bytes", errDamaged, size, pages, pageSize)
	}
	// The root bucket's page and the freelist's (none: all ones).
	for _, p := range []uint64{binary.LittleEndian.Uint64(best[16:]), binary.LittleEndian.Uint64(best[32:])} {
		if p != ^uint64(0) && p >= uint64(pages) {
			return fmt.Errorf("%w: a meta page points past the end (page %d of %d)", errDamaged, p, pages)
		}
	}
	return nil
}

// background commits the write-back memory every flushEvery, syncs
// every second and collects expired keys every minute.
func (e *Embedded) background() {
	defer e.done.Done()
	flushTick := time.NewTicker(flushEvery)
	defer flushTick.Stop()
	syncTick := time.NewTicker(time.Second)
	defer syncTick.Stop()
	gcTick := time.NewTicker(time.Minute)
	defer gcTick.Stop()
	var failing flushFailure
	for {
		select {
		case <-e.stop:
			return
		case <-flushTick.C:
			failing = e.noteFlush(e.flush(), failing)
		case <-syncTick.C:
			e.db.Sync() //nolint:errcheck // retried next second
		case <-gcTick.C:
			e.collect()
		}
	}
}

// collect deletes expired keys.
func (e *Embedded) collect() {
	now := e.now().UnixNano()
	e.db.Update(func(tx *bolt.Tx) error { //nolint:errcheck
		b := tx.Bucket(bucketKV)
		var dead [][]byte
		b.ForEach(func(k, v []byte) error { //nolint:errcheck
			if exp := expiry(v); exp != 0 && exp <= now {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range dead {
			b.Delete(k) //nolint:errcheck
		}
		return nil
	})
}

// Records are an 8-byte expiry (unix ns, 0 = none) and the value.
func encode(value []byte, exp int64) []byte {
	out := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(out, uint64(exp))
	copy(out[8:], value)
	return out
}

func expiry(rec []byte) int64 {
	if len(rec) < 8 {
		return 1 // malformed: expired
	}
	return int64(binary.BigEndian.Uint64(rec))
}

func (e *Embedded) expires(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	return e.now().Add(ttl).UnixNano()
}

func (e *Embedded) update(fn func(b *bolt.Bucket) error) error {
	if err := e.db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketKV)) }); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// Get implements Store.
func (e *Embedded) Get(_ context.Context, key string) (v []byte, ok bool, err error) {
	v, ok = e.read(key)
	return v, ok, nil
}

// Do implements Store: the Gets through memory and one read
// transaction, then the Greylist attempts.
func (e *Embedded) Do(ctx context.Context, ops []Op) error {
	var keys []string
	var at []int
	for i := range ops {
		if ops[i].Greylist == nil {
			keys, at = append(keys, ops[i].Key), append(at, i)
		}
	}
	for j, v := range e.readMany(keys) {
		ops[at[j]].Value = v
	}
	for i := range ops {
		if op := &ops[i]; op.Greylist != nil {
			if err := attempt(ctx, e, op); err != nil {
				return err
			}
		}
	}
	return nil
}

// Set implements Store.
func (e *Embedded) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	return e.modify(key, func(t kvTxn) error {
		t.put(key, encode(value, e.expires(ttl)))
		return nil
	})
}

// Delete implements Store.
func (e *Embedded) Delete(_ context.Context, key string) error {
	return e.modify(key, func(t kvTxn) error {
		t.del(key)
		return nil
	})
}

// Incr implements Store.
func (e *Embedded) Incr(_ context.Context, key string, delta int64, ttl time.Duration) (n int64, err error) {
	err = e.modify(key, func(t kvTxn) error {
		n = 0
		if v, ok := t.get(key); ok {
			n, _ = strconv.ParseInt(string(v), 10, 64)
		}
		n += delta
		t.put(key, encode([]byte(strconv.FormatInt(n, 10)), e.expires(ttl)))
		return nil
	})
	return n, err
}

// Counters implements Store.
func (e *Embedded) Counters(_ context.Context, key string, add []int64, ttl time.Duration) (out []int64, err error) {
	if !slices.ContainsFunc(add, func(d int64) bool { return d != 0 }) {
		// A read: no write.
		if v, ok := e.read(key); ok {
			out = parseCounters(v)
		}
		if out == nil {
			out = []int64{}
		}
		return out, nil
	}
	err = e.modify(key, func(t kvTxn) error {
		var cur []int64
		if v, ok := t.get(key); ok {
			cur = parseCounters(v)
		}
		var changed bool
		out, changed = addCounters(cur, add)
		if changed {
			t.put(key, encode(formatCounters(out), e.expires(ttl)))
		}
		return nil
	})
	return out, err
}

// Window implements Store.
func (e *Embedded) Window(_ context.Context, key string, now time.Time, win time.Duration, n int64) (count int64, err error) {
	idx, frac := bucket(now, win)
	cur, prev := key+"\x00b"+strconv.FormatInt(idx, 10), key+"\x00b"+strconv.FormatInt(idx-1, 10)
	err = e.modify(key, func(t kvTxn) error {
		var c, p int64
		if v, ok := t.get(cur); ok {
			c, _ = strconv.ParseInt(string(v), 10, 64)
		}
		if v, ok := t.get(prev); ok {
			p, _ = strconv.ParseInt(string(v), 10, 64)
		}
		count = windowCount(p, c+n, frac)
		if n != 0 {
			t.put(cur, encode([]byte(strconv.FormatInt(c+n, 10)), e.expires(2*win)))
		}
		return nil
	})
	return count, err
}

type greyRecord struct {
	First, Last int64 // unix ns
	Passed      bool
	Count       int64
}

// greyV1 starts a greylisting record in binary: the version byte, First,
// Last, Passed (0 or 1) and Count, greyLen bytes. Files written before
// hold JSON, which starts with "{" and is still read.
const (
	greyV1  = 1
	greyLen = 1 + 8 + 8 + 1 + 8
)

func (r greyRecord) append(b []byte) []byte {
	b = append(b, greyV1)
	b = binary.BigEndian.AppendUint64(b, uint64(r.First))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Last))
	p := byte(0)
	if r.Passed {
		p = 1
	}
	b = append(b, p)
	return binary.BigEndian.AppendUint64(b, uint64(r.Count))
}

// parseGreyRecord reads a record in either form; false if it is neither.
func parseGreyRecord(v []byte) (r greyRecord, ok bool) {
	if len(v) > 0 && v[0] == '{' {
		return r, json.Unmarshal(v, &r) == nil
	}
	if len(v) != greyLen || v[0] != greyV1 || v[17] > 1 {
		return r, false
	}
	return greyRecord{First: int64(binary.BigEndian.Uint64(v[1:9])), Last: int64(binary.BigEndian.Uint64(v[9:17])),
		Passed: v[17] == 1, Count: int64(binary.BigEndian.Uint64(v[18:26]))}, true
}

// Greylist implements Store.
func (e *Embedded) Greylist(_ context.Context, key string, now time.Time, p GreylistPolicy) (out GreylistEntry, err error) {
	err = e.modify(key, func(t kvTxn) error {
		var cur GreylistEntry
		v, exists := t.get(key)
		if exists {
			if r, ok := parseGreyRecord(v); !ok {
				exists = false
			} else {
				cur = GreylistEntry{First: time.Unix(0, r.First), Last: time.Unix(0, r.Last), Passed: r.Passed, Count: r.Count}
			}
		}
		out = decideGreylist(cur, exists, now, p)
		rec := greyRecord{First: out.First.UnixNano(), Last: out.Last.UnixNano(), Passed: out.Passed, Count: out.Count}.append(nil)
		ttl := p.Window
		if out.Passed {
			ttl = p.Keep
		}
		t.put(key, encode(rec, e.expires(ttl)))
		return nil
	})
	return out, err
}

type lockRecord struct {
	Owner string
	Until int64 // unix ns, from the caller's clock
	Token int64
}

// Lock implements Store.
func (e *Embedded) Lock(_ context.Context, name, owner string, now time.Time, lease time.Duration) (token int64, ok bool, err error) {
	key := "\x00lock\x00" + name
	err = e.update(func(b *bolt.Bucket) error {
		var r lockRecord
		if v := b.Get([]byte(key)); v != nil {
			json.Unmarshal(v[8:], &r) //nolint:errcheck
		}
		if r.Owner != "" && r.Owner != owner && r.Until > now.UnixNano() {
			token = r.Token
			return nil
		}
		if r.Owner != owner {
			r.Token++
		}
		r.Owner, r.Until = owner, now.Add(lease).UnixNano()
		token, ok = r.Token, true
		v, _ := json.Marshal(r)
		return b.Put([]byte(key), encode(v, 0)) // the token must outlive the lease
	})
	return token, ok, err
}

// Unlock implements Store.
func (e *Embedded) Unlock(_ context.Context, name, owner string) error {
	key := "\x00lock\x00" + name
	return e.update(func(b *bolt.Bucket) error {
		v := b.Get([]byte(key))
		if v == nil {
			return nil
		}
		var r lockRecord
		json.Unmarshal(v[8:], &r) //nolint:errcheck
		if r.Owner != owner {
			return nil
		}
		r.Owner, r.Until = "", 0
		nv, _ := json.Marshal(r)
		return b.Put([]byte(key), encode(nv, 0))
	})
}

// Scan implements Store. It commits the write-back memory first, so that
// it lists every key written so far (Scan is for ops commands, not the
// mail path).
func (e *Embedded) Scan(_ context.Context, prefix string, limit int) ([]string, error) {
	if err := e.flush(); err != nil {
		return nil, err
	}
	var out []string
	err := e.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		now := e.now().UnixNano()
		for k, v := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
			if bytes.IndexByte(k, 0) >= 0 {
				continue // window buckets and locks are internal
			}
			if exp := expiry(v); exp != 0 && exp <= now {
				continue
			}
			out = append(out, string(k))
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// Ping implements Store.
func (e *Embedded) Ping(context.Context) error { return nil }

// Sync makes everything written so far durable.
func (e *Embedded) Sync() error {
	if err := e.flush(); err != nil {
		return err
	}
	return e.db.Sync()
}

// Close commits what is written, syncs and closes the file.
func (e *Embedded) Close() error {
	close(e.stop)
	e.done.Wait()
	ferr := e.flush()
	e.db.Sync() //nolint:errcheck
	if err := e.db.Close(); err != nil {
		return err
	}
	return ferr
}
