// Package storetest is the contract every store implementation passes,
// and a helper that runs a real redis-server for tests. The store package
// runs the contract against the embedded store and a single Redis; the
// integration tests run it against Sentinel and Cluster.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
)

// base is a time aligned to every window length the contract uses.
var base = time.Unix(1_700_000_000, 0)

// Run runs the contract against fresh stores from open; each subtest gets
// its own key prefix, so open may return the same backend every time.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	prefix := fmt.Sprintf("ct%d:", time.Now().UnixNano())

	t.Run("get set delete", func(t *testing.T) {
		s := open(t)
		k := prefix + "kv"
		if _, ok, err := s.Get(ctx, k); ok || err != nil {
			t.Fatalf("missing key: %v %v", ok, err)
		}
		if err := s.Set(ctx, k, []byte("v1"), 0); err != nil {
			t.Fatal(err)
		}
		if v, ok, err := s.Get(ctx, k); !ok || err != nil || string(v) != "v1" {
			t.Fatalf("get: %q %v %v", v, ok, err)
		}
		if err := s.Set(ctx, k, []byte("v2"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if v, _, _ := s.Get(ctx, k); string(v) != "v2" {
			t.Fatalf("overwrite: %q", v)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Get(ctx, k); ok {
			t.Fatal("deleted key still there")
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("deleting a missing key: %v", err)
		}
	})

	t.Run("do", func(t *testing.T) {
		s := open(t)
		// Keys of different names (different Cluster slots), one of
		// them durable on the embedded store (rrow:), one missing, one
		// deleted, one expired, one a Counters value; and greylist
		// attempts among them.
		a, b, gone, del, exp, c := prefix+"many-a", "rrow:"+prefix+"many-b", prefix+"many-none", prefix+"many-del", prefix+"many-exp", prefix+"many-c"
		s.Set(ctx, a, []byte("A"), 0)                  //nolint:errcheck
		s.Set(ctx, b, []byte("B"), time.Hour)          //nolint:errcheck
		s.Set(ctx, del, []byte("D"), 0)                //nolint:errcheck
		s.Delete(ctx, del)                             //nolint:errcheck
		s.Set(ctx, exp, []byte("E"), time.Millisecond) //nolint:errcheck
		s.Counters(ctx, c, []int64{2, 5}, time.Hour)   //nolint:errcheck
		time.Sleep(20 * time.Millisecond)
		p := store.GreylistPolicy{Delay: time.Minute, Window: time.Hour, Keep: time.Hour}
		t0 := time.Now().Truncate(time.Millisecond)
		g := prefix + "many-grey"
		ops := []store.Op{{Key: a}, {Key: gone}, {Key: g, Greylist: &p, Now: t0}, {Key: b}, {Key: del}, {Key: exp}, {Key: c}, {Key: a}}
		if err := s.Do(ctx, ops); err != nil {
			t.Fatal(err)
		}
		want := []string{"A", "", "", "B", "", "", "2 5", "A"}
		for i, w := range want {
			if ops[i].Greylist == nil && (string(ops[i].Value) != w || (w == "") != (ops[i].Value == nil)) {
				t.Errorf("value %d: %q, want %q", i, ops[i].Value, w)
			}
		}
		if e := ops[2].Entry; !e.First.Equal(t0) || e.Passed {
			t.Errorf("first attempt: %+v", e)
		}
		// The attempt counted: a retry after the delay passes, in a
		// batch as on its own.
		ops = []store.Op{{Key: g, Greylist: &p, Now: t0.Add(2 * time.Minute)}, {Key: a}}
		if err := s.Do(ctx, ops); err != nil || !ops[0].Entry.Passed || ops[0].Entry.Count != 1 || !ops[0].Entry.First.Equal(t0) {
			t.Errorf("retry: %+v %v", ops[0].Entry, err)
		}
		if e, err := s.Greylist(ctx, g, t0.Add(3*time.Minute), p); err != nil || e.Count != 2 {
			t.Errorf("after the batch: %+v %v", e, err)
		}
		if err := s.Do(ctx, nil); err != nil {
			t.Errorf("no ops: %v", err)
		}
		// Unless: an attempt is skipped, and leaves nothing, while the
		// counter it names is at least the bound; made below it.
		cnt, g2 := prefix+"many-passes", prefix+"many-grey2"
		s.Incr(ctx, cnt, 5, time.Hour) //nolint:errcheck
		ops = []store.Op{{Key: g2, Greylist: &p, Now: t0, Unless: cnt, UnlessAtLeast: 5}, {Key: a}}
		if err := s.Do(ctx, ops); err != nil || !ops[0].Skipped || string(ops[1].Value) != "A" {
			t.Errorf("at the bound: skipped=%v %q %v", ops[0].Skipped, ops[1].Value, err)
		}
		if e, err := s.Greylist(ctx, g2, t0.Add(2*time.Minute), p); err != nil || e.Passed {
			t.Errorf("a skipped attempt was recorded: %+v %v", e, err)
		}
		ops = []store.Op{{Key: g2, Greylist: &p, Now: t0.Add(3 * time.Minute), Unless: cnt, UnlessAtLeast: 6}}
		// (a retry a minute after the direct attempt above: it passes)
		if err := s.Do(ctx, ops); err != nil || ops[0].Skipped || !ops[0].Entry.Passed {
			t.Errorf("below the bound: %+v skipped=%v %v", ops[0].Entry, ops[0].Skipped, err)
		}
		ops = []store.Op{{Key: g2, Greylist: &p, Now: t0.Add(3 * time.Minute), Unless: prefix + "many-nothing", UnlessAtLeast: 1}}
		if err := s.Do(ctx, ops); err != nil || ops[0].Skipped {
			t.Errorf("missing counter: skipped=%v %v", ops[0].Skipped, err)
		}
	})

	t.Run("ttl collects garbage", func(t *testing.T) {
		s := open(t)
		k := prefix + "ttl"
		if err := s.Set(ctx, k, []byte("x"), time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Incr(ctx, k+"c", 1, time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Counters(ctx, k+"n", []int64{1}, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := s.Set(ctx, k+"keep", []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1300 * time.Millisecond)
		for _, key := range []string{k, k + "c", k + "n"} {
			if _, ok, _ := s.Get(ctx, key); ok {
				t.Errorf("%s outlived its 1 s TTL", key)
			}
		}
		if _, ok, _ := s.Get(ctx, k+"keep"); !ok {
			t.Error("a key without TTL expired")
		}
	})

	t.Run("incr is atomic", func(t *testing.T) {
		s := open(t)
		k := prefix + "incr"
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					if _, err := s.Incr(ctx, k, 2, time.Hour); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if n, err := s.Incr(ctx, k, 0, time.Hour); err != nil || n != 1000 {
			t.Fatalf("20×25×2 increments = %d, %v", n, err)
		}
		if n, _ := s.Incr(ctx, k, -1000, time.Hour); n != 0 {
			t.Fatalf("decrement: %d", n)
		}
	})

	t.Run("counters", func(t *testing.T) {
		s := open(t)
		k := prefix + "ctr"
		if c, err := s.Counters(ctx, k, nil, time.Hour); err != nil || len(c) != 0 {
			t.Fatalf("missing key: %v %v", c, err)
		}
		if _, ok, _ := s.Get(ctx, k); ok {
			t.Fatal("reading counters created the key")
		}
		if c, err := s.Counters(ctx, k, []int64{1, 0}, time.Hour); err != nil || fmt.Sprint(c) != "[1 0]" {
			t.Fatalf("first add: %v %v", c, err)
		}
		if c, _ := s.Counters(ctx, k, []int64{0, 2, 5}, time.Hour); fmt.Sprint(c) != "[1 2 5]" {
			t.Fatalf("a longer add: %v", c)
		}
		if c, _ := s.Counters(ctx, k, []int64{-1}, time.Hour); fmt.Sprint(c) != "[0 2 5]" {
			t.Fatalf("a shorter add: %v", c)
		}
		// The encoding is decimal numbers and spaces: what reputation
		// was stored as before it was a Counters value.
		if err := s.Set(ctx, k, []byte("5 7"), time.Hour); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.Counters(ctx, k, []int64{1, 0}, time.Hour); fmt.Sprint(c) != "[6 7]" {
			t.Fatalf("after a plain value: %v", c)
		}
		if v, _, _ := s.Get(ctx, k); string(v) != "6 7" {
			t.Fatalf("stored as %q", v)
		}
	})

	t.Run("counters are atomic", func(t *testing.T) {
		s := open(t)
		k := prefix + "ctr-atomic"
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				add := []int64{1, 0}
				if w == 1 {
					add = []int64{0, 1}
				}
				for range 200 {
					if _, err := s.Counters(ctx, k, add, time.Hour); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if c, err := s.Counters(ctx, k, nil, 0); err != nil || fmt.Sprint(c) != "[200 200]" {
			t.Fatalf("two writers, 200 updates each: %v %v", c, err)
		}
	})

	t.Run("sliding window", func(t *testing.T) {
		s := open(t)
		k := prefix + "win"
		win := 10 * time.Second
		steps := []struct {
			at   time.Duration
			n    int64
			want int64
		}{
			{0, 5, 5},
			{5 * time.Second, 5, 10},
			{10 * time.Second, 1, 11}, // new bucket: all of the previous one, plus 1
			{15 * time.Second, 0, 6},  // half of the previous bucket (5) + 1
			{19 * time.Second, 0, 2},  // a tenth of 10 rounds to 1, + 1
			{25 * time.Second, 0, 1},  // half of 1 rounds to 1
			{40 * time.Second, 3, 3},  // everything older has gone
			{40 * time.Second, -3, 0}, // n may be negative (undo)
		}
		for _, st := range steps {
			got, err := s.Window(ctx, k, base.Add(st.at), win, st.n)
			if err != nil {
				t.Fatal(err)
			}
			if got != st.want {
				t.Errorf("at +%v adding %d: %d, want %d", st.at, st.n, got, st.want)
			}
		}
	})

	t.Run("greylist", func(t *testing.T) {
		s := open(t)
		k := prefix + "grey"
		p := store.GreylistPolicy{Delay: 5 * time.Minute, Window: 4 * time.Hour, Keep: 30 * 24 * time.Hour}
		steps := []struct {
			at     time.Duration
			passed bool
			first  time.Duration
			count  int64
		}{
			{0, false, 0, 0},
			{time.Minute, false, 0, 0},        // too early: still waiting, first kept
			{6 * time.Minute, true, 0, 1},     // a retry after the delay passes
			{7 * time.Minute, true, 0, 2},     // and stays passed
			{30 * 24 * time.Hour, true, 0, 3}, // long after: still passed while kept
		}
		for _, st := range steps {
			e, err := s.Greylist(ctx, k, base.Add(st.at), p)
			if err != nil {
				t.Fatal(err)
			}
			if e.Passed != st.passed || !e.First.Equal(base.Add(st.first)) || e.Count != st.count {
				t.Errorf("at +%v: %+v, want passed=%v first=+%v count=%d", st.at, e, st.passed, st.first, st.count)
			}
		}
		if e, _ := s.Greylist(ctx, k+"w", base, p); e.Wait(base.Add(time.Minute), p) != 4*time.Minute {
			t.Errorf("wait %v", e.Wait(base.Add(time.Minute), p))
		}
		// A retry after the window starts over.
		e, _ := s.Greylist(ctx, k+"late", base, p)
		e, _ = s.Greylist(ctx, k+"late", base.Add(5*time.Hour), p)
		if e.Passed || !e.First.Equal(base.Add(5*time.Hour)) {
			t.Errorf("late retry: %+v", e)
		}
		// A first attempt in the future (the clock jumped an hour
		// forward, then back): the entry starts over now, so that the
		// sender waits one delay, not the hour the clock jumped.
		s.Greylist(ctx, k+"jump", base.Add(time.Hour), p) //nolint:errcheck
		if e, _ := s.Greylist(ctx, k+"jump", base, p); e.Passed || !e.First.Equal(base) {
			t.Errorf("after the clock went back: %+v, want first=+0", e)
		}
		if e, _ := s.Greylist(ctx, k+"jump", base.Add(6*time.Minute), p); !e.Passed {
			t.Errorf("a retry one delay after the clock went back: %+v, want passed", e)
		}
		// Many first attempts at once agree on one first time.
		var wg sync.WaitGroup
		firsts := make(chan time.Time, 10)
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e, err := s.Greylist(ctx, k+"race", base.Add(time.Duration(i)*time.Millisecond), p)
				if err == nil {
					firsts <- e.First
				}
			}()
		}
		wg.Wait()
		close(firsts)
		seen := map[int64]bool{}
		for f := range firsts {
			seen[f.UnixMilli()] = true
		}
		if len(seen) != 1 {
			t.Errorf("concurrent first attempts recorded %d first times", len(seen))
		}
	})

	t.Run("lock with lease and fencing token", func(t *testing.T) {
		s := open(t)
		name := prefix + "lock"
		lease := time.Minute
		tok, ok, err := s.Lock(ctx, name, "a", base, lease)
		if err != nil || !ok {
			t.Fatalf("a takes: %v %v", ok, err)
		}
		if _, ok, _ := s.Lock(ctx, name, "b", base.Add(time.Second), lease); ok {
			t.Fatal("b took a held lock")
		}
		if t2, ok, _ := s.Lock(ctx, name, "a", base.Add(30*time.Second), lease); !ok || t2 != tok {
			t.Fatalf("a renews: %v token %d, want %d", ok, t2, tok)
		}
		// a's lease (renewed at +30s) ends at +90s.
		if _, ok, _ := s.Lock(ctx, name, "b", base.Add(89*time.Second), lease); ok {
			t.Fatal("b took the lock before the lease ended")
		}
		tb, ok, _ := s.Lock(ctx, name, "b", base.Add(91*time.Second), lease)
		if !ok || tb <= tok {
			t.Fatalf("b after the lease: %v token %d (a had %d)", ok, tb, tok)
		}
		if _, ok, _ := s.Lock(ctx, name, "a", base.Add(92*time.Second), lease); ok {
			t.Fatal("a took b's lock")
		}
		if err := s.Unlock(ctx, name, "a"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Lock(ctx, name, "a", base.Add(93*time.Second), lease); ok {
			t.Fatal("a's unlock released b's lock")
		}
		if err := s.Unlock(ctx, name, "b"); err != nil {
			t.Fatal(err)
		}
		ta, ok, _ := s.Lock(ctx, name, "a", base.Add(94*time.Second), lease)
		if !ok || ta <= tb {
			t.Fatalf("a after b unlocked: %v token %d (b had %d)", ok, ta, tb)
		}
	})

	t.Run("scan", func(t *testing.T) {
		s := open(t)
		for _, k := range []string{"scan:a", "scan:b", "other:c"} {
			if err := s.Set(ctx, prefix+k, []byte("1"), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		s.Window(ctx, prefix+"scan:w", base, time.Minute, 1) //nolint:errcheck
		keys, err := s.Scan(ctx, prefix+"scan:", 0)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(sorted(keys), " ")
		if got != prefix+"scan:a "+prefix+"scan:b" {
			t.Fatalf("scan: %s", got)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})

	// The prefixes a backend may list from an index (Redis does, for the
	// received reports and the marks): the same answers as a scan, a
	// deleted key gone, another domain's keys apart.
	t.Run("scan indexed", func(t *testing.T) {
		s := open(t)
		dom := strings.ReplaceAll(strings.TrimSuffix(prefix, ":"), ":", "-") + ".example"
		for _, k := range []string{"rsent:" + dom + ":1:a", "rsent:" + dom + ":2:b", "rsent:x" + dom + ":1:c"} {
			if err := s.Set(ctx, k, []byte("1"), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		list := func() string {
			t.Helper()
			keys, err := s.Scan(ctx, "rsent:"+dom+":", 0)
			if err != nil {
				t.Fatal(err)
			}
			return strings.Join(sorted(keys), " ")
		}
		if got := list(); got != "rsent:"+dom+":1:a rsent:"+dom+":2:b" {
			t.Fatalf("scan: %s", got)
		}
		if err := s.Delete(ctx, "rsent:"+dom+":1:a"); err != nil {
			t.Fatal(err)
		}
		if got := list(); got != "rsent:"+dom+":2:b" {
			t.Fatalf("scan after a delete: %s", got)
		}
	})

	runState(t, open)
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// Redis is a redis-server run for a test.
type Redis struct {
	Addr string
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
	conf string
	args []string
}

// StartRedis starts redis-server on a free loopback port with extra
// config lines. A missing redis-server fails the test: CI must install it.
func StartRedis(t testing.TB, extra string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: run scripts/install-test-deps (make test does): %v", err)
	}
	r, err := startRedis(bin, t.TempDir(), extra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// NewRedis starts redis-server in dir, for harnesses without a testing.TB;
// the caller stops it.
func NewRedis(dir, extra string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found: run scripts/install-test-deps (make test does): %w", err)
	}
	return startRedis(bin, dir, extra)
}

func startRedis(bin, dir, extra string) (*Redis, error) {
	return startRedisArgs(bin, dir, extra)
}

// startRedisArgs starts a server on a free port; the port was free when
// chosen, and another try takes another one if it no longer is.
func startRedisArgs(bin, dir, extra string, args ...string) (r *Redis, err error) {
	for range 3 {
		if r, err = startRedisOnce(bin, dir, extra, args...); err == nil {
			return r, nil
		}
	}
	return nil, err
}

func startRedisOnce(bin, dir, extra string, args ...string) (*Redis, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: dir, conf: filepath.Join(dir, "redis.conf"), args: args}
	conf := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\nlogfile %s/redis.log\n%s\n", port, dir, dir, extra)
	if err := os.WriteFile(r.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return r, r.start(bin)
}

func (r *Redis) start(bin string) error {
	r.cmd = exec.Command(bin, append([]string{r.conf}, r.args...)...)
	if err := r.cmd.Start(); err != nil {
		return err
	}
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.done) }() //nolint:errcheck
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond); err == nil {
			c.Write([]byte("PING\r\n")) //nolint:errcheck
			buf := make([]byte, 7)
			c.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop()
	b, _ := os.ReadFile(filepath.Join(r.Dir, "redis.log"))
	return errors.New("redis-server did not answer: " + string(b))
}

// Stop kills the server.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Kill() //nolint:errcheck
	<-r.done
	r.cmd = nil
}

// Restart starts the server again on the same port.
func (r *Redis) Restart() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return err
	}
	return r.start(bin)
}
