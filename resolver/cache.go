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
	rcode   int // dns.RcodeSuccess with no rrs = NODATA
	expires time.Time
}

// cache is a TTL cache with a size cap; when full, the least recently
// used entry goes.
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recently used; values are *entry
	items map[cacheKey]*list.Element
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: map[cacheKey]*list.Element{}}
}

// get returns the live entry for k, if any.
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
