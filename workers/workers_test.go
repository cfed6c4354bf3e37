package workers

import (
	"sync"
	"testing"
	"time"
)

// Functions run at once, never queued behind others; the workers then
// wait, at most max of them, and leave once idle too long.
func TestPool(t *testing.T) {
	p := New(5, 200*time.Millisecond)
	var started, release sync.WaitGroup
	release.Add(1)
	for range 20 {
		started.Add(1)
		p.Go(func() { started.Done(); release.Wait() })
	}
	done := make(chan struct{})
	go func() { started.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the functions did not all start: one waits behind another")
	}
	release.Done()
	waitFor(t, func() bool { return p.Idle() == 5 }, "5 idle workers")
	// The idle ones are used again.
	var ran sync.WaitGroup
	ran.Add(3)
	for range 3 {
		p.Go(ran.Done)
	}
	ran.Wait()
	waitFor(t, func() bool { return p.Idle() == 5 }, "5 idle workers again")
	waitFor(t, func() bool { return p.Idle() == 0 }, "the idle workers gone")
}

// Close lets the idle workers go; what comes after still runs.
func TestPoolClose(t *testing.T) {
	p := New(5, time.Hour)
	var ran sync.WaitGroup
	ran.Add(2)
	p.Go(ran.Done)
	p.Go(ran.Done)
	ran.Wait()
	waitFor(t, func() bool { return p.Idle() >= 1 }, "an idle worker")
	p.Close()
	if p.Idle() != 0 {
		t.Errorf("%d idle after Close", p.Idle())
	}
	ran.Add(1)
	p.Go(ran.Done)
	ran.Wait()
	time.Sleep(10 * time.Millisecond)
	if p.Idle() != 0 {
		t.Errorf("%d idle after Close and Go", p.Idle())
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("waited in vain for %s", what)
}

//go:noinline
func deep(n int) int {
	var pad [256]byte
	pad[n%256] = byte(n)
	if n == 0 {
		return int(pad[0])
	}
	return deep(n-1) + int(pad[n%256])
}

// BenchmarkDeep: a function that needs about 32 KiB of stack, on a new
// goroutine each time and on the pool's workers.
func BenchmarkDeep(b *testing.B) {
	for _, tc := range []struct {
		name string
		run  func(func())
	}{
		{"goroutine", func(f func()) { go f() }},
		{"pool", New(64, time.Minute).Go},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var wg sync.WaitGroup
			for range b.N {
				wg.Add(1)
				tc.run(func() { deep(100); wg.Done() })
				wg.Wait()
			}
		})
	}
}
