package store_test

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

// The prefixes the web view lists per domain come from an index, not
// from walking the key space: keys stored before the index existed are
// found (and the index completed), expired ones dropped, deleted ones
// gone, and other prefixes of the key space stay out.
func TestRedisIndexedScan(t *testing.T) {
	r := storetest.StartRedis(t, "")
	s, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}, Prefix: "wehr:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	cli := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("redis-cli", append([]string{"-p", portOf(r.Addr)}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("redis-cli %v: %v %s", args, err, out)
		}
	}
	list := func(prefix string, limit int) []string {
		t.Helper()
		keys, err := s.Scan(ctx, prefix, limit)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(keys)
		return keys
	}
	// Stored before the index: straight into Redis.
	cli("SET", "wehr:{rinm:bank.example:old}", "x")
	for i := range 3 {
		if err := s.Set(ctx, fmt.Sprintf("rinm:bank.example:r%d", i), []byte("x"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	s.Set(ctx, "rinm:other.example:r9", []byte("x"), time.Hour)
	s.Set(ctx, "greylist:1.2.3.4", []byte("x"), time.Hour)
	want := []string{"rinm:bank.example:old", "rinm:bank.example:r0", "rinm:bank.example:r1", "rinm:bank.example:r2"}
	if got := list("rinm:bank.example:", 0); !slices.Equal(got, want) {
		t.Fatalf("first listing %v, want %v", got, want)
	}
	// From the index now (completed by the listing).
	if got := list("rinm:bank.example:", 0); !slices.Equal(got, want) {
		t.Fatalf("second listing %v", got)
	}
	if got := list("rinm:bank.example:", 2); len(got) != 2 {
		t.Errorf("limit 2: %v", got)
	}
	s.Delete(ctx, "rinm:bank.example:r1")
	s.Set(ctx, "rinm:bank.example:short", []byte("x"), 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	want = []string{"rinm:bank.example:old", "rinm:bank.example:r0", "rinm:bank.example:r2"}
	if got := list("rinm:bank.example:", 0); !slices.Equal(got, want) {
		t.Fatalf("after a delete and an expiry %v, want %v", got, want)
	}
	// The prefixes without an index still walk the keys.
	if got := list("rinm:", 0); len(got) != 4 {
		t.Errorf("all domains (SCAN): %v", got)
	}
	if got := list("greylist:", 0); len(got) != 1 {
		t.Errorf("greylist (SCAN): %v", got)
	}
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return addr
}
