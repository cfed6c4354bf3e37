package mtasts

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/fastcache"
)

// Recent answers: a settled answer is given again within the keep time
// without DNS or a fetch, and logged as such; a new id is seen once it
// has passed; a failed lookup is not kept (the next one tries again);
// the size stays bounded.
func TestRecent(t *testing.T) {
	f, hits := policyServer(t)
	dns := fakeDNS{"_mta-sts.good.test": {"v=STSv1; id=one"}, "_mta-sts.flaky.test": {"SERVFAIL"}}
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := &Resolver{DNS: dns, Fetcher: f, Cache: MemCache{}, Now: func() time.Time { return now }}
	var logb bytes.Buffer
	recent := NewRecent(time.Minute, 100)
	lookup := PostfixLookup(r, recent, slog.New(slog.NewTextHandler(&logb, nil)))
	ctx := context.Background()
	ask := func(key string) (string, bool) {
		t.Helper()
		a, found, err := lookup(ctx, "postfix", key)
		if err != nil {
			t.Fatal(err)
		}
		return a, found
	}

	const secure = "secure match=mx.good.test servername=hostname"
	if a, ok := ask("good.test"); !ok || a != secure || hits.Load() != 1 {
		t.Fatalf("first: %q %v", a, ok)
	}
	dns["_mta-sts.good.test"] = []string{"v=STSv1; id=two"}
	now = now.Add(30 * time.Second)
	if a, ok := ask("Good.Test."); !ok || a != secure || hits.Load() != 1 {
		t.Fatalf("within the keep time: %q %v, %d fetches", a, ok, hits.Load())
	}
	if !strings.Contains(logb.String(), `domain=good.test how=recent answer="`+secure+`"`) {
		t.Errorf("a recent answer is not logged as such:\n%s", logb.String())
	}
	now = now.Add(31 * time.Second)
	if a, ok := ask("good.test"); !ok || a != secure || hits.Load() != 2 {
		t.Fatalf("after the keep time: %q %v, %d fetches", a, ok, hits.Load())
	}
	// No record: kept (NOTFOUND fast for the many domains without
	// MTA-STS).
	ask("nosts.test")
	if _, _, ok := recent.get("nosts.test", now); !ok {
		t.Error("no record: not kept")
	}
	// DNS failing without a cached policy: not kept, so that once DNS is
	// back the policy is found at once.
	if _, ok := ask("flaky.test"); ok {
		t.Fatal("flaky: an answer")
	}
	if _, _, ok := recent.get("flaky.test", now); ok {
		t.Error("a failed lookup was kept")
	}
	// Bounded: twice the room in answers, and the space stays within
	// what was asked for (32 MB at least).
	big := NewRecent(time.Minute, 1000)
	defer big.Release()
	long := strings.Repeat("x", 100)
	for i := range 600_000 {
		big.put(Result{Domain: fmt.Sprintf("n%d.test", i)}, long, true, now)
	}
	var st fastcache.Stats
	big.c.UpdateStats(&st)
	if st.BytesSize > 33<<20 || st.EntriesCount >= 600_000 {
		t.Errorf("%d bytes, %d answers kept", st.BytesSize, st.EntriesCount)
	}
	if a, found, ok := big.get("n599999.test", now); !ok || !found || a != long {
		t.Errorf("the newest answer is gone: %q %v %v", a, found, ok)
	}
	// Off: nil keeps nothing, and asks every time.
	if NewRecent(0, 10) != nil {
		t.Error("a zero keep time keeps answers")
	}
}
