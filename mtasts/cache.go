package mtasts

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
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
	v, ok := decodeCached(b)
	return v, ok, nil
}

// Put implements Cache.
func (c StoreCache) Put(ctx context.Context, domain string, v Cached) error {
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	return c.P.Put(ctx, domain, encodeCached(v), v.Expires.Sub(now))
}

// cachedMagic starts the stored form of a cached policy: lines of the id,
// the fetch and expiry times (Unix seconds), the mode, max_age (seconds)
// and the MX patterns. About 70 bytes for a one-MX policy, against 190
// as JSON: the store holds one per destination domain.
const cachedMagic = "sts1\n"

func encodeCached(v Cached) []byte {
	b := make([]byte, 0, 64+len(v.ID)+16*len(v.Policy.MX))
	b = append(b, cachedMagic...)
	b = append(b, v.ID...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, v.Fetched.Unix(), 10)
	b = append(b, '\n')
	b = strconv.AppendInt(b, v.Expires.Unix(), 10)
	b = append(b, '\n')
	b = append(b, v.Policy.Mode...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, int64(v.Policy.MaxAge/time.Second), 10)
	for _, mx := range v.Policy.MX {
		b = append(b, '\n')
		b = append(b, mx...)
	}
	return b
}

// decodeCached reads what encodeCached wrote, or the JSON of earlier
// versions.
func decodeCached(b []byte) (Cached, bool) {
	rest, ok := strings.CutPrefix(string(b), cachedMagic)
	if !ok {
		var v Cached
		if json.Unmarshal(b, &v) != nil || v.Policy.Mode == "" {
			return Cached{}, false
		}
		return v, true
	}
	f := strings.Split(rest, "\n")
	if len(f) < 5 {
		return Cached{}, false
	}
	fetched, err1 := strconv.ParseInt(f[1], 10, 64)
	expires, err2 := strconv.ParseInt(f[2], 10, 64)
	maxAge, err3 := strconv.ParseInt(f[4], 10, 64)
	mode := Mode(f[3])
	if err1 != nil || err2 != nil || err3 != nil || mode != Enforce && mode != Testing && mode != None {
		return Cached{}, false
	}
	v := Cached{ID: f[0], Fetched: time.Unix(fetched, 0), Expires: time.Unix(expires, 0),
		Policy: Policy{Mode: mode, MaxAge: time.Duration(maxAge) * time.Second}}
	if len(f) > 5 {
		v.Policy.MX = f[5:]
	}
	return v, true
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
