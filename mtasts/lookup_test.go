package mtasts

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
)

type fakeDNS map[string][]string // name → TXT; "SERVFAIL" as the only value fails

func (d fakeDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	v, ok := d[name]
	switch {
	case !ok:
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	case len(v) == 1 && v[0] == "SERVFAIL":
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return v, nil
}

type mapCache map[string]Cached

func (m mapCache) Get(_ context.Context, d string) (Cached, bool, error) {
	c, ok := m[d]
	return c, ok, nil
}

func (m mapCache) Put(_ context.Context, d string, c Cached) error { m[d] = c; return nil }

func TestLookup(t *testing.T) {
	f, hits := policyServer(t)
	dns := fakeDNS{"_mta-sts.good.test": {"v=STSv1; id=one"}, "_mta-sts.wrongcert.test": {"v=STSv1; id=1"}}
	cache := mapCache{}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := &Resolver{DNS: dns, Fetcher: f, Cache: cache, Now: func() time.Time { return now }}
	ctx := context.Background()

	// No record: no policy, no fetch.
	if res := r.Lookup(ctx, "nosts.test"); res.Policy != nil || res.How != "none" || res.Err == nil || hits.Load() != 0 {
		t.Fatalf("no record: %+v, %d fetches", res, hits.Load())
	}
	// Fetched once, then from the cache while the id stays.
	res := r.Lookup(ctx, "good.test")
	if res.How != "fetched" || res.Policy == nil || res.ID != "one" || hits.Load() != 1 {
		t.Fatalf("first: %+v", res)
	}
	if a, ok := res.Postfix(); !ok || a != "secure match=mx.good.test servername=hostname" {
		t.Errorf("Postfix answer %q %v", a, ok)
	}
	now = now.Add(time.Hour)
	if res := r.Lookup(ctx, "GOOD.test."); res.How != "cached" || res.Err != nil || hits.Load() != 1 {
		t.Fatalf("second: %+v, %d fetches", res, hits.Load())
	}
	// A new id: fetched again.
	dns["_mta-sts.good.test"] = []string{"v=STSv1; id=two"}
	if res := r.Lookup(ctx, "good.test"); res.How != "fetched" || res.ID != "two" || hits.Load() != 2 {
		t.Fatalf("new id: %+v", res)
	}

	// The forger on the path: the record disappears, DNS fails, the
	// HTTPS server is another one (wrong certificate): the cached policy
	// stands until it expires, and says why it was not refreshed.
	delete(dns, "_mta-sts.good.test")
	if res := r.Lookup(ctx, "good.test"); res.How != "cached" || res.Policy == nil || res.Policy.Mode != Enforce || res.Err == nil {
		t.Errorf("record stripped: %+v", res)
	}
	dns["_mta-sts.good.test"] = []string{"SERVFAIL"}
	if res := r.Lookup(ctx, "good.test"); res.How != "cached" || res.Policy == nil || !strings.Contains(res.Err.Error(), "server misbehaving") {
		t.Errorf("DNS failing: %+v", res)
	}
	cache["wrongcert.test"] = Cached{ID: "0", Policy: Policy{Mode: Enforce, MaxAge: 24 * time.Hour, MX: []string{"mx.wrongcert.test"}}, Fetched: now, Expires: now.Add(24 * time.Hour)}
	if res := r.Lookup(ctx, "wrongcert.test"); res.How != "cached" || res.Policy == nil || !strings.Contains(res.Err.Error(), "not valid for mta-sts.wrongcert.test") {
		t.Errorf("refresh with a wrong certificate: %+v", res)
	}
	// Once expired, a policy that cannot be refreshed is gone.
	now = now.Add(25 * time.Hour)
	if res := r.Lookup(ctx, "wrongcert.test"); res.Policy != nil || res.How != "none" || res.Err == nil {
		t.Errorf("expired and not refreshable: %+v", res)
	}
	// testing and none: Postfix keeps its own default.
	for _, m := range []Mode{Testing, None} {
		if a, ok := (Result{Policy: &Policy{Mode: m}}).Postfix(); ok || a != "" {
			t.Errorf("%s: %q", m, a)
		}
	}
	if a, _ := (Result{Policy: &Policy{Mode: Enforce, MX: []string{"*.example.net", "mx.example.org"}}}).Postfix(); a != "secure match=.example.net:mx.example.org servername=hostname" {
		t.Errorf("wildcard: %q", a)
	}
}

// TestStoreCache: policies round-trip through the store, and what does
// not decode there (another version's record, damage) is no policy.
func TestStoreCache(t *testing.T) {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Now()
	c := StoreCache{P: store.NewStsPolicies(st)}
	want := Cached{ID: "abc", Policy: Policy{Mode: Enforce, MaxAge: time.Hour, MX: []string{"*.example.net"}}, Fetched: now.UTC().Truncate(time.Second), Expires: now.Add(time.Hour).UTC().Truncate(time.Second)}
	if err := c.Put(ctx, "Example.NET.", want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := c.Get(ctx, "example.net")
	if err != nil || !ok || got.ID != want.ID || got.Policy.Mode != Enforce || !got.Expires.Equal(want.Expires) || got.Policy.MX[0] != "*.example.net" {
		t.Fatalf("got %+v %v %v", got, ok, err)
	}
	st.Set(ctx, "sts:broken.example", []byte("{not json"), time.Hour)
	if _, ok, err := c.Get(ctx, "broken.example"); ok || err != nil {
		t.Errorf("a broken record: %v %v", ok, err)
	}
}
