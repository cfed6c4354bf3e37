package mtasts

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/wehr/wehr/store"
)

// StoreCache keeps policies in the store, shared by every node.
type StoreCache struct {
	P   store.StsPolicies
	Now func() time.Time // nil: time.Now
}

// Get implements Cache. A record that does not decode is no record.
func (c StoreCache) Get(ctx context.Context, domain string) (Cached, bool, error) {
	b, ok, err := c.P.Get(ctx, domain)
	if err != nil || !ok {
		return Cached{}, false, err
	}
	var v Cached
	if json.Unmarshal(b, &v) != nil || v.Policy.Mode == "" {
		return Cached{}, false, nil
	}
	return v, true, nil
}

// Put implements Cache.
func (c StoreCache) Put(ctx context.Context, domain string, v Cached) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("mtasts: %w", err)
	}
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	return c.P.Put(ctx, domain, b, v.Expires.Sub(now))
}

// MemCache keeps policies in memory: for one query (wehr mtasts query
// --no-cache) and tests.
type MemCache map[string]Cached

// Get implements Cache.
func (m MemCache) Get(_ context.Context, d string) (Cached, bool, error) {
	c, ok := m[d]
	return c, ok, nil
}

// Put implements Cache.
func (m MemCache) Put(_ context.Context, d string, c Cached) error { m[d] = c; return nil }
