package resolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cacheKey identifies one question: lower-case FQDN and type.
type cacheKey struct {
	name  string
	qtype uint16
}

// entry is a cached answer: the records of the asked type (positive) or
// the rcode of a negative answer (NXDOMAIN or NODATA, RFC 2308).
type entry struct {
	key     cacheKey
	rrs     []dns.RR
	txt     []string // a TXT answer's records as strings (txtStrings)
	rcode   int      // dns.RcodeSuccess with no rrs = NODATA
	expires time.Time
	// ad: the server said it validated the answer (the AD bit), for the
	// types asked with the DO bit (secureType).
	ad bool
}

// cache is a TTL cache with a size cap; when full, the least recently
// used entry goes.
type cache struct {
	mu    sync.Mutex
	max   int
	stale time.Duration // how long an expired entry is kept to serve stale
	ll    *list.List    // front = most recently used; values are *entry
	items map[cacheKey]*list.Element
}

func newCache(max int, stale time.Duration) *cache {
	return &cache{max: max, stale: stale, ll: list.New(), items: map[cacheKey]*list.Element{}}
}

// get returns the entry for k, if any, and whether it is live; an
// expired one is returned (not live) while it may still be served
// stale, and dropped after.
func (c *cache) get(k cacheKey, now time.Time) (*entry, bool) {
	if c.max <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		if now.Before(e.expires.Add(c.stale)) {
			return e, false
		}
		c.ll.Remove(el)
		delete(c.items, k)
		return nil, false
	}
	c.ll.MoveToFront(el)
	return e, true
}

func (c *cache) put(e *entry) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.items[e.key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*entry).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
