package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
