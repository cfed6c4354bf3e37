package store

import (
	"context"
	"strings"
	"time"
)

// StsPolicies are the MTA-STS policies of the domains we deliver to
// (RFC 8461 5.1), under sts:DOMAIN, shared by every node so that one
// fetch serves all. The value's encoding is package mtasts's; each
// lives until its policy expires.
type StsPolicies struct{ st Store }

// NewStsPolicies is the MTA-STS policy cache in st.
func NewStsPolicies(st Store) StsPolicies { return StsPolicies{st: st} }

func stsKey(domain string) string { return "sts:" + strings.ToLower(strings.TrimSuffix(domain, ".")) }

// Get returns domain's cached policy, and whether there is one.
func (s StsPolicies) Get(ctx context.Context, domain string) ([]byte, bool, error) {
	return s.st.Get(ctx, stsKey(domain))
}

// Put caches domain's policy for ttl (at least a minute).
func (s StsPolicies) Put(ctx context.Context, domain string, v []byte, ttl time.Duration) error {
	return s.st.Set(ctx, stsKey(domain), v, max(ttl, time.Minute))
}

// Domains lists up to limit domains with a cached policy.
func (s StsPolicies) Domains(ctx context.Context, limit int) ([]string, error) {
	keys, err := s.st.Scan(ctx, "sts:", limit)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, strings.TrimPrefix(k, "sts:"))
	}
	return out, nil
}

// RefreshLock is the lease the node refreshing the cached policies holds,
// so that one node at a time does it.
const RefreshLock = "sts-refresh"

// Lock takes or renews the refresh lease for owner.
func (s StsPolicies) Lock(ctx context.Context, owner string, now time.Time, lease time.Duration) (bool, error) {
	_, ok, err := s.st.Lock(ctx, RefreshLock, owner, now, lease)
	return ok, err
}
