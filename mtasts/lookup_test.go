package mtasts

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

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

func TestLookup(t *testing.T) {
	f, hits := policyServer(t)
	dns := fakeDNS{"_mta-sts.good.test": {"v=STSv1; id=one"}, "_mta-sts.wrongcert.test": {"v=STSv1; id=1"}}
	cache := MemCache{}
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
	if b, _, _ := st.Get(ctx, "sts:example.net"); len(b) > 80 {
		t.Errorf("the stored form is %d bytes: %q", len(b), b)
	}
	// What earlier versions stored (JSON) still reads.
	old := []byte(`{"ID":"old","Policy":{"Mode":"testing","MaxAge":3600000000000,"MX":["mx.old.example"]},"Fetched":"2026-12-01T10:00:00Z","Expires":"2026-12-01T11:00:00Z"}`)
	st.Set(ctx, "sts:old.example", old, time.Hour)
	if got, ok, _ := c.Get(ctx, "old.example"); !ok || got.ID != "old" || got.Policy.Mode != Testing || got.Policy.MX[0] != "mx.old.example" {
		t.Errorf("a JSON record: %+v %v", got, ok)
	}
	// Several MX patterns, and no MX (mode none).
	for _, v := range []Cached{
		{ID: "m", Policy: Policy{Mode: Enforce, MaxAge: 24 * time.Hour, MX: []string{"mx1.example.org", "*.example.org"}}, Fetched: want.Fetched, Expires: want.Expires},
		{ID: "n", Policy: Policy{Mode: None, MaxAge: 24 * time.Hour}, Fetched: want.Fetched, Expires: want.Expires},
	} {
		c.Put(ctx, "many.example", v)
		got, ok, _ := c.Get(ctx, "many.example")
		if !ok || got.ID != v.ID || got.Policy.Mode != v.Policy.Mode || strings.Join(got.Policy.MX, ",") != strings.Join(v.Policy.MX, ",") || got.Policy.MaxAge != v.Policy.MaxAge {
			t.Errorf("round trip: %+v, want %+v", got, v)
		}
	}
	// Broken records are no record: JSON, truncated, an unknown mode,
	// a time that is not a number.
	for _, b := range []string{"{not json", "sts1\nid\n1", "sts1\nid\n1\n2\ndowngrade\n60\nmx.example", "sts1\nid\nx\n2\nenforce\n60\nmx.example"} {
		st.Set(ctx, "sts:broken.example", []byte(b), time.Hour)
		if _, ok, err := c.Get(ctx, "broken.example"); ok || err != nil {
			t.Errorf("a broken record %q: %v %v", b, ok, err)
		}
	}
}

// TestRefresh: the background refresh fetches a policy about to expire
// even though its id did not change; a lookup for mail does not.
func TestRefresh(t *testing.T) {
	f, hits := policyServer(t)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	cache := MemCache{"good.test": {ID: "one", Policy: Policy{Mode: Enforce, MaxAge: 24 * time.Hour, MX: []string{"mx.good.test"}},
		Fetched: now.Add(-22 * time.Hour), Expires: now.Add(2 * time.Hour)}}
	r := &Resolver{DNS: fakeDNS{"_mta-sts.good.test": {"v=STSv1; id=one"}}, Fetcher: f, Cache: cache, Now: func() time.Time { return now }}
	ctx := context.Background()
	if res := r.Lookup(ctx, "good.test"); res.How != "cached" || hits.Load() != 0 {
		t.Fatalf("lookup: %+v, %d fetches", res, hits.Load())
	}
	if res := r.Refresh(ctx, "good.test", time.Hour); res.How != "cached" || hits.Load() != 0 {
		t.Fatalf("refresh, 2h left, within 1h: %+v", res)
	}
	if res := r.Refresh(ctx, "good.test", 6*time.Hour); res.How != "fetched" || hits.Load() != 1 || !cache["good.test"].Expires.Equal(now.Add(24*time.Hour)) {
		t.Fatalf("refresh, 2h left, within 6h: %+v, cache %+v", res, cache["good.test"])
	}
	// within is at most half the max_age: a one-hour policy with 40
	// minutes left is not fetched on every round.
	cache["good.test"] = Cached{ID: "one", Policy: Policy{Mode: Enforce, MaxAge: time.Hour, MX: []string{"mx.good.test"}}, Expires: now.Add(40 * time.Minute)}
	if res := r.Refresh(ctx, "good.test", 6*time.Hour); res.How != "cached" {
		t.Fatalf("short policy: %+v", res)
	}
}

// TestRefreshLoop: the node holding the lease refreshes what is cached
// in the store, and says so in the log.
func TestRefreshLoop(t *testing.T) {
	f, hits := policyServer(t)
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	p := store.NewStsPolicies(st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := StoreCache{P: p}
	c.Put(ctx, "good.test", Cached{ID: "old", Policy: Policy{Mode: Testing, MaxAge: time.Hour, MX: []string{"mx.good.test"}}, Fetched: time.Now(), Expires: time.Now().Add(time.Hour)})
	r := &Resolver{DNS: fakeDNS{"_mta-sts.good.test": {"v=STSv1; id=new"}}, Fetcher: f, Cache: c}
	var buf safeBuffer
	done := make(chan struct{})
	go func() {
		r.RefreshLoop(ctx, p, "node-a", 20*time.Millisecond, time.Hour, slog.New(slog.NewTextHandler(&buf, nil)))
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "fetched=1") {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh: %s", buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got, _, _ := c.Get(context.Background(), "good.test"); got.ID != "new" || got.Policy.Mode != Enforce || hits.Load() == 0 {
		t.Errorf("after the refresh: %+v, %d fetches", got, hits.Load())
	}
}

type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *safeBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type fakeSecure map[string]struct {
	rrs    []dns.RR
	secure bool
}

func (f fakeSecure) LookupSecure(_ context.Context, name string, qtype uint16) ([]dns.RR, bool, error) {
	v, ok := f[name+"/"+dns.TypeToString[qtype]]
	if !ok {
		return nil, false, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return v.rrs, v.secure, nil
}

// TestDANEFirst: a domain with an enforced MTA-STS policy whose MX hosts
// all publish DNSSEC-validated TLSA records gets mandatory DANE; any
// gap (an unvalidated MX or TLSA answer, a host without TLSA) leaves
// MTA-STS in charge.
func TestDANEFirst(t *testing.T) {
	f, _ := policyServer(t)
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	mx1, mx2 := rr("good.test. 300 IN MX 10 mx1.good.test."), rr("good.test. 300 IN MX 20 mx2.good.test.")
	tlsa := rr("_25._tcp.mx1.good.test. 300 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	type entry = struct {
		rrs    []dns.RR
		secure bool
	}
	tests := []struct {
		name string
		dns  fakeSecure
		want string
	}{
		{"all covered", fakeSecure{"good.test/MX": entry{[]dns.RR{mx1, mx2}, true},
			"_25._tcp.mx1.good.test./TLSA": entry{[]dns.RR{tlsa}, true}, "_25._tcp.mx2.good.test./TLSA": entry{[]dns.RR{tlsa}, true}}, "dane-only"},
		{"MX not validated", fakeSecure{"good.test/MX": entry{[]dns.RR{mx1}, false},
			"_25._tcp.mx1.good.test./TLSA": entry{[]dns.RR{tlsa}, true}}, "secure match=mx.good.test servername=hostname"},
		{"one host without TLSA", fakeSecure{"good.test/MX": entry{[]dns.RR{mx1, mx2}, true},
			"_25._tcp.mx1.good.test./TLSA": entry{[]dns.RR{tlsa}, true}}, "secure match=mx.good.test servername=hostname"},
		{"TLSA not validated", fakeSecure{"good.test/MX": entry{[]dns.RR{mx1}, true},
			"_25._tcp.mx1.good.test./TLSA": entry{[]dns.RR{tlsa}, false}}, "secure match=mx.good.test servername=hostname"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Resolver{DNS: fakeDNS{"_mta-sts.good.test": {"v=STSv1; id=one"}}, Fetcher: f, Cache: MemCache{}, Secure: tc.dns}
			lookup := PostfixLookup(r, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			got, found, err := lookup(context.Background(), "postfix", "good.test")
			if err != nil || !found || got != tc.want {
				t.Errorf("got %q %v %v, want %q", got, found, err, tc.want)
			}
		})
	}
}
