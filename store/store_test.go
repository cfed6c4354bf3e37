package store_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

func TestEmbeddedContract(t *testing.T) {
	s, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "wehr.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.Run(t, func(*testing.T) store.Store { return s })
}

func TestRedisContract(t *testing.T) {
	r := storetest.StartRedis(t, "")
	s, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}, Prefix: "wehr:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.Run(t, func(*testing.T) store.Store { return s })
}

func TestEmbeddedSingleOwner(t *testing.T) {
	p := filepath.Join(t.TempDir(), "wehr.db")
	s, err := store.OpenEmbedded(p)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := store.OpenEmbedded(p); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("second open: %v after %v", err, time.Since(start))
	}
	// Survives a reopen.
	ctx := context.Background()
	s.Set(ctx, "k", []byte("v"), 0) //nolint:errcheck
	s.Close()
	s, err = store.OpenEmbedded(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, ok, _ := s.Get(ctx, "k"); !ok || string(v) != "v" {
		t.Fatalf("after reopen: %q %v", v, ok)
	}
}

// Redis down: errors are ErrUnavailable and come fast; when it is back,
// the same client works again.
func TestRedisDown(t *testing.T) {
	r := storetest.StartRedis(t, "")
	s, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Incr(ctx, "k", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	start := time.Now()
	_, err = s.Incr(ctx, "k", 1, time.Minute)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("with Redis down: %v", err)
	}
	// Generous bound: the point is fractions of a second, not the
	// library's defaults of several seconds.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("failing took %v", d)
	}
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := s.Incr(ctx, "k", 1, time.Minute); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no recovery after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRedisModes(t *testing.T) {
	for _, bad := range []store.RedisConfig{
		{Mode: store.ModeSingle, Addrs: []string{"a:1", "b:2"}},
		{Mode: store.ModeSentinel, Addrs: []string{"a:1"}},
		{Mode: "auto", Addrs: []string{"a:1"}},
		{Mode: store.ModeSingle},
	} {
		if _, err := store.OpenRedis(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// The admin socket serves the embedded store to ops commands, and passes
// the same contract.
func TestAdminSocketContract(t *testing.T) {
	dir := t.TempDir()
	s, err := store.OpenEmbedded(filepath.Join(dir, "wehr.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sock := filepath.Join(dir, "admin.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.ServeAdmin(ctx, s, sock, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	defer func() { cancel(); <-done }()
	var r *store.Remote
	for range 100 {
		if r, err = store.DialAdmin(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	storetest.Run(t, func(*testing.T) store.Store { return r })
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v %v", fi.Mode(), err)
	}
}

// A damaged store file is moved aside and a new store started: mail
// must keep flowing after the machine crashed between two syncs. A sound
// file is kept, and so is one we may not read.
func TestEmbeddedDamaged(t *testing.T) {
	ctx := context.Background()
	// A sound store with some pages to damage.
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := store.OpenEmbedded(good)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		s.Set(ctx, fmt.Sprintf("greylist:%d", i), bytes.Repeat([]byte("x"), 100), 0) //nolint:errcheck
		if i%10 == 9 {
			s.Sync() //nolint:errcheck // many commits, as a running store makes
		}
	}
	s.Close()
	sound, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// The pages the meta pages count (bbolt's layout: the page count
	// at offset 16+40 of each meta page); the file may be longer.
	counted := 4096 * int(max(binary.LittleEndian.Uint64(sound[56:]), binary.LittleEndian.Uint64(sound[4096+56:])))
	if counted < 5*4096 || counted > len(sound) {
		t.Fatalf("counted %d bytes of %d", counted, len(sound))
	}
	for _, tc := range []struct {
		name  string
		data  func() []byte
		moved bool
	}{
		{"sound", func() []byte { return sound }, false},
		{"random bytes", func() []byte { return bytes.Repeat([]byte("\x13\x37garbage"), 3000) }, true},
		{"cut short", func() []byte { return sound[:len(sound)/3] }, true},
		// Truncation at page boundaries and inside a page: bbolt would
		// map pages past the end of the file, a SIGBUS (issue 10.9).
		{"truncated to 4096", func() []byte { return sound[:4096] }, true},
		{"truncated to 8192", func() []byte { return sound[:8192] }, true},
		{"truncated to 12288", func() []byte { return sound[:12288] }, true},
		{"truncated to 16384", func() []byte { return sound[:16384] }, true},
		{"truncated by one counted page", func() []byte { return sound[:counted-4096] }, true},
		{"truncated inside the last counted page", func() []byte { return sound[:counted-100] }, true},
		{"only the preallocated tail cut", func() []byte { return sound[:counted] }, false},
		{"truncated to 100 bytes", func() []byte { return sound[:100] }, true},
		{"pages overwritten", func() []byte {
			b := append([]byte(nil), sound...)
			for i := 4 * 4096; i < len(b); i += 7 {
				b[i] ^= 0x5a
			}
			return b
		}, true},
		{"one leaf page's type overwritten", func() []byte {
			b := append([]byte(nil), sound...)
			for off := 4 * 4096; off+4096 <= len(b); off += 4096 {
				if b[off+8] == 0x02 && b[off+10] != 0 { // flags: leaf; count > 0
					b[off+8] = 0x40
					return b
				}
			}
			return nil // no leaf page: the subtest fails
		}, true},
		{"meta pages zeroed", func() []byte {
			b := append([]byte(nil), sound...)
			clear(b[:2*4096])
			return b
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "wehr.db")
			data := tc.data()
			if data == nil {
				t.Fatal("no page to damage")
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := store.OpenEmbedded(p)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			t.Logf("moved: %s: %v", s.Moved, s.MovedWhy)
			if (s.Moved != "") != tc.moved {
				t.Fatalf("moved %q, want moved=%v", s.Moved, tc.moved)
			}
			if tc.moved {
				if s.MovedWhy == nil {
					t.Error("no reason given for moving the file aside")
				}
				m, _ := filepath.Glob(p + ".corrupt-*")
				if len(m) != 1 {
					t.Fatalf("damaged file not kept aside: %v", m)
				}
			} else if v, ok, _ := s.Get(ctx, "greylist:7"); !ok || len(v) != 100 {
				t.Fatal("sound store lost its data")
			}
			// The store works.
			if err := s.Set(ctx, "k", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Not readable (not root): an error, nothing moved.
	if os.Geteuid() != 0 {
		p := filepath.Join(t.TempDir(), "wehr.db")
		os.WriteFile(p, sound, 0o000) //nolint:errcheck
		if _, err := store.OpenEmbedded(p); err == nil {
			t.Fatal("opened an unreadable file")
		}
		if m, _ := filepath.Glob(p + ".corrupt-*"); len(m) != 0 {
			t.Fatal("an unreadable file was moved aside")
		}
	}
}

// Report rows do not rebuild themselves: when a damaged file is moved
// aside, they are read back from it into the new one, page by page, with
// their latest counts, whatever the damage to the meta pages or the tree.
func TestEmbeddedSalvagesReportRows(t *testing.T) {
	ctx := context.Background()
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := store.OpenEmbedded(good)
	if err != nil {
		t.Fatal(err)
	}
	rr := store.NewReportRows(s)
	hour := time.Now()
	for i := range 2000 {
		s.Set(ctx, fmt.Sprintf("grey:%d", i), bytes.Repeat([]byte("x"), 100), 0) //nolint:errcheck
		if i%10 == 0 {                                                           // many versions of the same counts on older pages
			for d := range 3 {
				rr.Add(ctx, fmt.Sprintf("d%d.example", d), hour, fmt.Sprintf("k%d", d), []byte(fmt.Sprintf(`{"row":%d}`, d)), 1) //nolint:errcheck
			}
		}
	}
	// The rest of the reporting state: a mark of a report sent, the
	// suppression list, a received report and its records.
	store.NewReportMarks(s).Put(ctx, store.ReportMark{Domain: "d0.example", Begin: hour.Truncate(time.Hour), Address: "a@d0.example", Status: "sent"}) //nolint:errcheck
	store.NewSuppressions(s).Add(ctx, store.Suppression{Address: "x@y.example"})                                                                       //nolint:errcheck
	received := store.NewReceivedReports(s, time.Hour)
	received.PutChunk(ctx, "tok", 0, []byte(`[{"row":1}]`))  //nolint:errcheck
	received.PutMeta(ctx, "d0.example", "id1", []byte(`{}`)) //nolint:errcheck
	s.Close()
	sound, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data func() []byte
	}{
		{"meta pages zeroed", func() []byte {
			b := append([]byte(nil), sound...)
			clear(b[:2*4096])
			return b
		}},
		{"the leaf pages of greylisting garbled", func() []byte {
			// Every leaf page that holds greylisting and no report
			// rows: which pages are live and where their boundaries
			// fall depends on how the writes were batched (every
			// 100 ms), so garbling only the first such page may hit a
			// page no longer in use, or one that also holds rows.
			b := append([]byte(nil), sound...)
			n := 0
			for off := 4 * 4096; off+4096 <= len(b); off += 4096 {
				page := b[off : off+4096]
				if b[off+8] == 0x02 && bytes.Contains(page, []byte("grey:")) && !bytes.Contains(page, []byte("rrow:")) && !bytes.Contains(page, []byte("rdef:")) {
					b[off+8] = 0x40
					n++
				}
			}
			if n == 0 {
				return nil
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "wehr.db")
			data := tc.data()
			if data == nil {
				t.Fatal("nothing to damage")
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := store.OpenEmbedded(p)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Moved == "" || s.Salvaged != 10 || s.SalvageErr != nil {
				t.Fatalf("moved %q, salvaged %d, %v", s.Moved, s.Salvaged, s.SalvageErr)
			}
			for d := range 3 {
				rows, err := store.NewReportRows(s).Rows(ctx, fmt.Sprintf("d%d.example", d), hour.Add(-time.Hour), hour.Add(time.Hour))
				if err != nil || len(rows) != 1 || rows[0].Count != 200 || string(rows[0].Def) != fmt.Sprintf(`{"row":%d}`, d) {
					t.Fatalf("d%d: %+v %v", d, rows, err)
				}
			}
			if _, ok, _ := s.Get(ctx, "grey:7"); ok {
				t.Fatal("greylisting was copied too: it rebuilds itself")
			}
			if m, _ := store.NewReportMarks(s).List(ctx, "d0.example"); len(m) != 1 {
				t.Error("the mark of a report sent is lost: it would be sent again")
			}
			if sup, _ := store.NewSuppressions(s).List(ctx); len(sup) != 1 {
				t.Error("the suppression list is lost")
			}
			if c, err := store.NewReceivedReports(s, time.Hour).Chunk(ctx, "tok", 0); err != nil || string(c) != `[{"row":1}]` {
				t.Errorf("a received report's records are lost: %v", err)
			}
			if ok, _ := store.NewReceivedReports(s, time.Hour).Has(ctx, "d0.example", "id1"); !ok {
				t.Error("a received report is lost")
			}
		})
	}
}

// Issue 12.2: the rate-limit reply says when the sliding window admits
// the next event, not the whole window.
func TestWindowWait(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "w.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	win := time.Hour
	for _, tc := range []struct {
		name   string
		offset time.Duration // of the events into their bucket
		later  time.Duration // when the next one is refused
	}{
		{"same bucket", 10 * time.Minute, 5 * time.Minute},
		{"next bucket", 50 * time.Minute, 20 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "urate:msg:" + tc.name
			start := time.Now().Truncate(win).Add(tc.offset)
			for range 3 {
				if _, err := s.Window(ctx, key, start, win, 1); err != nil {
					t.Fatal(err)
				}
			}
			now := start.Add(tc.later)
			if n, _ := s.Window(ctx, key, now, win, 0); n < 3 {
				t.Fatalf("count %d", n)
			}
			wait, err := store.WindowWait(ctx, s, key, now, win, 3)
			if err != nil {
				t.Fatal(err)
			}
			if wait <= 0 || wait >= win+tc.offset {
				t.Fatalf("wait %v", wait)
			}
			if n, _ := s.Window(ctx, key, now.Add(wait), win, 0); n > 2 {
				t.Errorf("after %v the window still counts %d", wait, n)
			}
			if n, _ := s.Window(ctx, key, now.Add(wait-3*time.Minute), win, 0); n <= 2 {
				t.Errorf("3 minutes before %v it counts %d already: the wait is too long", wait, n)
			}
			t.Logf("%s: retry in %v (not %v)", tc.name, wait, win)
		})
	}
}

// A batch's greylist attempt goes as EVALSHA; after Redis lost its
// scripts (a restart, a failover to a replica that never ran them) the
// attempt is still made, and counted once.
func TestRedisDoWithoutScripts(t *testing.T) {
	r := storetest.StartRedis(t, "")
	s, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	p := store.GreylistPolicy{Delay: time.Minute, Window: time.Hour, Keep: time.Hour}
	t0 := time.Now()
	if _, err := s.Greylist(ctx, "grey:x", t0, p); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("redis-cli", "-p", r.Addr[strings.LastIndexByte(r.Addr, ':')+1:], "SCRIPT", "FLUSH").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ops := []store.Op{{Key: "grey:x", Greylist: &p, Now: t0.Add(2 * time.Minute)}, {Key: "grey-ok:x"}}
	if err := s.Do(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if e := ops[0].Entry; !e.Passed || e.Count != 1 {
		t.Fatalf("attempt after SCRIPT FLUSH: %+v", e)
	}
	exec.Command("redis-cli", "-p", r.Addr[strings.LastIndexByte(r.Addr, ':')+1:], "SCRIPT", "FLUSH").Run() //nolint:errcheck
	ops = []store.Op{{Key: "grey:y", Greylist: &p, Now: t0, Unless: "grey-ok:x", UnlessAtLeast: 1}}
	if err := s.Do(ctx, ops); err != nil || ops[0].Skipped || !ops[0].Entry.First.Equal(t0.Truncate(time.Millisecond)) {
		t.Fatalf("conditional attempt after SCRIPT FLUSH: %+v %v", ops[0], err)
	}
}
