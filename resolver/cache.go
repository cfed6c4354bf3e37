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

// flight coalesces concurrent identical queries: one goes to the network,
// the others wait for its result.
type flight struct {
	mu    sync.Mutex
	calls map[cacheKey]*call
}

type call struct {
	done chan struct{}
	e    *entry
	err  error
}

// do runs fn once for k among concurrent callers. The returned call is
// finished when its done channel is closed. leader reports whether this
// caller started fn.
func (f *flight) do(k cacheKey, fn func() (*entry, error)) (c *call, leader bool) {
	f.mu.Lock()
	if c, ok := f.calls[k]; ok {
		f.mu.Unlock()
		return c, false
	}
	c = &call{done: make(chan struct{})}
	if f.calls == nil {
		f.calls = map[cacheKey]*call{}
	}
	f.calls[k] = c
	f.mu.Unlock()

	go func() {
		c.e, c.err = fn()
		f.mu.Lock()
		delete(f.calls, k)
		f.mu.Unlock()
		close(c.done)
	}()
	return c, true
}
