// Package store is the one interface to everything stateful in wehr.
// Two backends pass the same contract tests (storetest): Redis (single,
// Sentinel or Cluster), shared by every node of a cluster, and an
// embedded bbolt file for a single node, which ops commands reach
// through the admin socket of wehr serve.
//
// Store is the backend: atomic primitives over keys. The daemons and the
// ops commands never build keys; each kind of state has one type here
// that owns its key prefix, its unit (Network: /24, /64), its encoding,
// its lifetime and its atomicity:
//
//	Greylists     grey:, grey-ok:     triplets, passes per network
//	Reputation    rep:                passes and refusals per address and network (Counters)
//	PassHistory   hist:               networks that delivered DMARC-passing mail per domain
//	Rates         rate:, urate:, uvol: sliding windows per address, network, user
//	Transactions  inst:               Postfix transactions already counted
//	StsPolicies   sts:                MTA-STS policies of the domains we deliver to
//	Store.Lock    lock: (in the backend) leases with fencing tokens
//
// All of these rebuild themselves: after a crash that damages the
// embedded file, wehr starts with an empty store and loses nothing that
// matters. The DMARC report rows (the aggregate reports we owe, and the
// reports we receive) are the first state that must not be lost: they
// get a type of their own here, in a bbolt bucket of their own that a
// damaged-file recovery must keep, not move aside.
//
// Time is an argument: windows, greylist ages and lock leases are decided
// from timestamps stored with the data, never from the server's clock.
// TTLs only collect garbage, relative to real time.
package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrUnavailable is wrapped by every error that means "the store did not
// answer" (Redis down, a failover in progress, a timeout): callers fall
// back to their configured default and try again next time.
var ErrUnavailable = errors.New("store unavailable")

// Store is the interface every stateful part of wehr uses. All methods are
// safe for concurrent use; every one is atomic on its own.
type Store interface {
	// Get returns a value, and whether it exists.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Do makes ops (Gets and Greylist attempts, each atomic on its
	// own, not together) in one round trip and fills in their results
	// (Batch builds on it).
	Do(ctx context.Context, ops []Op) error
	// Set stores a value; it is collected ttl after this write (0: kept).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes a key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Incr adds delta to a counter and returns the new value; the
	// counter is collected ttl after its last change.
	Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)
	// Counters adds add[i] to the i-th of a small vector of counters
	// stored under key (missing counters are 0) and returns the whole
	// vector after the change, in one atomic step: two MX nodes that
	// update it at once lose neither update. The key is collected ttl
	// after its last change; an add of all zeros only reads. Values
	// are kept as decimal numbers separated by spaces.
	Counters(ctx context.Context, key string, add []int64, ttl time.Duration) ([]int64, error)
	// Window adds n events at now to the sliding window key of length
	// win and returns the events counted in (now-win, now]. The window is
	// the weighted sum of two fixed buckets, as rate limiters do: exact at
	// bucket edges, linear in between.
	Window(ctx context.Context, key string, now time.Time, win time.Duration, n int64) (int64, error)
	// Greylist records a delivery attempt for a greylist key at now and
	// says whether it may pass (see Greylist).
	Greylist(ctx context.Context, key string, now time.Time, p GreylistPolicy) (GreylistEntry, error)
	// Lock takes or renews the lock name for owner until now+lease, if
	// it is free, expired or already owner's. The fencing token grows by
	// one each time the lock changes hands; work done under a lock must
	// be idempotent, since after a Redis failover two holders are
	// possible.
	Lock(ctx context.Context, name, owner string, now time.Time, lease time.Duration) (token int64, ok bool, err error)
	// Unlock releases the lock if owner holds it.
	Unlock(ctx context.Context, name, owner string) error
	// Scan lists the keys that start with prefix (for ops commands; not
	// for the mail path), at most limit.
	Scan(ctx context.Context, prefix string, limit int) ([]string, error)
	// Ping checks the store answers.
	Ping(ctx context.Context) error
	Close() error
}

// GreylistPolicy says how greylisting treats a key.
type GreylistPolicy struct {
	// Delay is how long a first attempt must wait before a retry passes.
	Delay time.Duration
	// Window is how long after the first attempt a retry still counts;
	// later, the triplet starts over.
	Window time.Duration
	// Keep is how long a passed triplet is remembered after its last use.
	Keep time.Duration
}

// GreylistEntry is the state of a greylist key after an attempt.
type GreylistEntry struct {
	First  time.Time // first attempt of the current round
	Last   time.Time // this attempt
	Passed bool      // the retry came in time: deliveries pass from now on
	// Count is the number of attempts that passed.
	Count int64
}

// Wait is how long the client must still wait, at now.
func (g GreylistEntry) Wait(now time.Time, p GreylistPolicy) time.Duration {
	if g.Passed {
		return 0
	}
	return max(p.Delay-now.Sub(g.First), 0)
}

// decideGreylist is the greylisting rule both implementations apply
// atomically: an entry passes once an attempt comes at least Delay and at
// most Window after the first; past the Window, it starts over.
// clockSkew is how far apart the clocks of nodes sharing a store may be;
// a time further in the future means a clock jumped.
const clockSkew = time.Minute

func decideGreylist(e GreylistEntry, exists bool, now time.Time, p GreylistPolicy) GreylistEntry {
	// A first attempt more than a minute after now: the clock went back
	// (nodes' clocks differing by less are normal). Start over now, so
	// that the sender waits one delay rather than as long as the clock
	// jumped.
	if !exists || (!e.Passed && (now.Sub(e.First) > p.Window || e.First.Sub(now) > clockSkew)) {
		return GreylistEntry{First: now, Last: now}
	}
	e.Last = now
	if !e.Passed && now.Sub(e.First) >= p.Delay {
		e.Passed = true
	}
	if e.Passed {
		e.Count++
	}
	return e
}

// bucket returns the fixed bucket of now for a window of length win, and
// how far into it now is (0..1).
func bucket(now time.Time, win time.Duration) (idx int64, frac float64) {
	n := now.UnixNano()
	w := int64(win)
	idx = n / w
	return idx, float64(n%w) / float64(w)
}

// windowCount combines the previous and current buckets.
func windowCount(prev, cur int64, frac float64) int64 {
	return int64(float64(prev)*(1-frac)+0.5) + cur
}

// WindowWait returns how long from now until the sliding window key of
// length win counts fewer than limit events, so that one more is
// admitted: what a rate-limit reply should say, rather than the whole
// window. It reads the window (adding nothing) at now and at the end of
// the current bucket, from which the two buckets' counts follow (see
// Window).
func WindowWait(ctx context.Context, st Store, key string, now time.Time, win time.Duration, limit int64) (time.Duration, error) {
	idx, _ := bucket(now, win)
	bucketStart := time.Unix(0, idx*int64(win))
	bucketEnd := bucketStart.Add(win)
	atNow, err := st.Window(ctx, key, now, win, 0)
	if err != nil {
		return 0, err
	}
	// At the start of the bucket the previous one counts whole, at its
	// end not at all: their difference is the previous bucket's count.
	atStart, err := st.Window(ctx, key, bucketStart, win, 0)
	if err != nil {
		return 0, err
	}
	cur, err := st.Window(ctx, key, bucketEnd.Add(-time.Nanosecond), win, 0)
	if err != nil {
		return 0, err
	}
	prev := float64(atStart - cur)
	target := float64(limit - 1) // the count at which one more fits
	var at time.Time
	switch {
	case float64(atNow) <= target:
		return 0, nil
	case float64(cur) <= target && prev > 0:
		// Within this bucket, as the previous one's weight falls (the
		// weighted part is rounded: it must fall below half a unit
		// above what is left).
		f := 1 - (target-float64(cur)+0.5)/prev
		at = time.Unix(0, idx*int64(win)+int64(f*float64(win)))
	default:
		// In the next bucket, as this one's weight falls.
		f := 1.0
		if cur > 0 {
			f = max(1-(target+0.5)/float64(cur), 0)
		}
		at = bucketEnd.Add(time.Duration(f * float64(win)))
	}
	wait := max(at.Sub(now), 0)
	// Whole seconds, rounded up, and one more: at the exact instant the
	// rounded count is still at the limit.
	return wait.Truncate(time.Second) + 2*time.Second, nil
}

// parseCounters reads a Counters value; what is not a number counts 0.
func parseCounters(v []byte) []int64 {
	var out []int64
	for _, f := range strings.Fields(string(v)) {
		n, _ := strconv.ParseInt(f, 10, 64)
		out = append(out, n)
	}
	return out
}

// addCounters applies add to cur and says whether anything changed.
func addCounters(cur, add []int64) ([]int64, bool) {
	changed := false
	for i, d := range add {
		if i >= len(cur) {
			cur = append(cur, 0)
		}
		cur[i] += d
		changed = changed || d != 0
	}
	return cur, changed
}

func formatCounters(c []int64) []byte {
	var b []byte
	for i, n := range c {
		if i > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendInt(b, n, 10)
	}
	return b
}
