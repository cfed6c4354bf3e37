// Package workers runs short functions on long-lived goroutines. A new
// goroutine starts with a small stack and copies it each time it grows;
// a message's verification goes deep (RSA, DNS, the DKIM canonicaliser)
// and paid that several times per message on fresh goroutines. A worker
// keeps its grown stack from one function to the next (until the garbage
// collector shrinks an idle one), so the copies are paid rarely.
package workers

import (
	"sync"
	"time"
)

// Pool runs functions on its idle workers, or on new ones; it never
// queues a function behind another. It keeps at most max idle workers,
// each for idle at most. The zero Pool is not usable: New makes one.
type Pool struct {
	max  int
	idle time.Duration

	mu     sync.Mutex
	ready  []*worker // idle workers, the most recently used last
	closed bool
}

type worker struct {
	ch chan func()
}

// New is a pool keeping at most max idle workers, each for at most idle.
func New(max int, idle time.Duration) *Pool {
	return &Pool{max: max, idle: idle}
}

// Go runs f on an idle worker, or on a new goroutine that becomes one.
// f must not panic (recover inside it): a panic ends the process, as it
// would on a goroutine of its own.
func (p *Pool) Go(f func()) {
	p.mu.Lock()
	if n := len(p.ready); n > 0 {
		w := p.ready[n-1]
		p.ready = p.ready[:n-1]
		p.mu.Unlock()
		w.ch <- f
		return
	}
	p.mu.Unlock()
	go p.run(&worker{ch: make(chan func(), 1)}, f)
}

// run runs f, then whatever it is given, until it has been idle too
// long or there are enough idle workers.
func (p *Pool) run(w *worker, f func()) {
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		p.mu.Lock()
		if p.closed || len(p.ready) >= p.max {
			p.mu.Unlock()
			return
		}
		p.ready = append(p.ready, w)
		p.mu.Unlock()
		t.Reset(p.idle)
		select {
		case f = <-w.ch:
			continue
		case <-t.C:
		}
		// Idle too long: leave, unless Go took this worker meanwhile
		// (then its function is on the way).
		p.mu.Lock()
		i := indexOf(p.ready, w)
		if i >= 0 {
			p.ready = append(p.ready[:i], p.ready[i+1:]...)
		}
		p.mu.Unlock()
		if i >= 0 {
			return
		}
		f = <-w.ch
	}
}

func indexOf(ws []*worker, w *worker) int {
	for i, x := range ws {
		if x == w {
			return i
		}
	}
	return -1
}

// Idle is how many workers wait for work.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ready)
}

// Close lets the idle workers go; functions given after it still run,
// each on a goroutine of its own.
func (p *Pool) Close() {
	p.mu.Lock()
	ready := p.ready
	p.ready, p.closed = nil, true
	p.mu.Unlock()
	for _, w := range ready {
		w.ch <- func() {}
	}
}
