package mtasts

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/VictoriaMetrics/fastcache"
)

// Recent keeps the answers given to Postfix for a short while, so that a
// busy Postfix asking for the same destinations over and over is
// answered from memory, without the store, the DNS cache or the DANE
// check. Only settled answers are kept: a policy found (fetched or
// cached), no policy, or no record; a lookup that failed otherwise (DNS
// or the store down, a fetch error without a cached policy) is done
// again next time. A change of a domain's policy is seen at most Keep
// later, as with a DNS TTL.
//
// The answers live outside the Go heap (fastcache's memory-mapped
// chunks, about 100 bytes an answer with its key, the oldest
// overwritten once the space is full), so that holding a hundred
// thousand of them costs that memory and not the garbage collector's
// headroom as well.
type Recent struct {
	Keep time.Duration
	c    *fastcache.Cache
}

// recentBytes is the space given to one answer: the key, a Postfix
// answer naming a few MX patterns, and fastcache's own bytes.
const recentBytes = 160

// NewRecent keeps answers for keep, room for about max of them (at
// least 32 MB of room is reserved, but only what answers use is
// touched); nil when keep is 0 (every lookup done in full).
func NewRecent(keep time.Duration, max int) *Recent {
	if keep <= 0 {
		return nil
	}
	return &Recent{Keep: keep, c: fastcache.New(max * recentBytes)}
}

// Release gives the space back (the Recent is not used afterwards).
func (r *Recent) Release() {
	if r != nil {
		r.c.Reset()
	}
}

// get returns the answer kept for domain, if it is still fresh.
func (r *Recent) get(domain string, now time.Time) (answer string, found, ok bool) {
	if r == nil {
		return "", false, false
	}
	var buf [256]byte
	v, ok := r.c.HasGet(buf[:0], []byte(domain))
	if !ok || len(v) < 9 || now.UnixNano() >= int64(binary.BigEndian.Uint64(v)) {
		return "", false, false
	}
	return string(v[9:]), v[8] == 1, true
}

// settled says whether res may be kept: anything but a failure that
// left no policy (other than there being no record).
func settled(res Result) bool {
	return res.Err == nil || res.Policy != nil || errors.Is(res.Err, ErrNoRecord)
}

// put keeps the answer for res's domain.
func (r *Recent) put(res Result, answer string, found bool, now time.Time) {
	if r == nil || !settled(res) {
		return
	}
	v := make([]byte, 9, 9+len(answer))
	binary.BigEndian.PutUint64(v, uint64(now.Add(r.Keep).UnixNano()))
	if found {
		v[8] = 1
	}
	r.c.Set([]byte(res.Domain), append(v, answer...))
}
