package listener

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Limit wraps ln so that a daemon keeps serving whatever its clients do:
// while max connections are open, Accept closes the one that has waited
// longest for its client to send anything (at least evictAfter), so
// that connections left idle by the hundred, or clients sending a byte
// at a time, cannot hold the service (Postfix reconnects a policy
// connection it finds closed); if none has, it waits (the next ones wait
// in the kernel's backlog; logged once per burst). It retries the errors that
// pass (out of file descriptors, a connection aborted before it was
// accepted) with a backoff of up to a second, logged, as net/http does.
// Only a closed listener ends Accept. name says whose connections these
// are in the log.
func Limit(ln net.Listener, max int, name string, log *slog.Logger) net.Listener {
	return &limited{Listener: ln, name: name, log: log, slots: make(chan struct{}, max), max: max, closed: make(chan struct{}),
		conns: map[*slotConn]struct{}{}, epoch: time.Now()}
}

type limited struct {
	net.Listener
	name  string
	log   *slog.Logger
	slots chan struct{}
	max   int

	mu    sync.Mutex
	conns map[*slotConn]struct{}

	closeOnce sync.Once
	closed    chan struct{}
	full      atomic.Bool // logged that the limit was reached
	// epoch is when the listener started: waits are measured from it
	// on the monotonic clock, so that the wall clock jumping (an hour
	// forward: every connection looks idle) does not pick victims.
	epoch time.Time
}

func (l *limited) done() chan struct{} { return l.closed }

func (l *limited) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *limited) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
		l.full.Store(false)
	default:
		// Full: make room by closing a connection whose client keeps it
		// waiting, looking again every evictSilentAfter while none has.
		for took := false; !took; {
			if took = l.evictIdle(); took {
				break
			}
			if !l.full.Swap(true) {
				l.log.Warn(l.name+": connection limit reached; new connections wait until one closes", "max_connections", l.max)
			}
			t := time.NewTimer(evictSilentAfter)
			select {
			case l.slots <- struct{}{}:
				took = true
			case <-t.C:
			case <-l.done():
				t.Stop()
				return nil, net.ErrClosed
			}
			t.Stop()
		}
	}
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			sc := &slotConn{Conn: c, epoch: l.epoch}
			sc.release = func() {
				l.mu.Lock()
				delete(l.conns, sc)
				l.mu.Unlock()
				<-l.slots
			}
			l.mu.Lock()
			l.conns[sc] = struct{}{}
			l.mu.Unlock()
			return sc, nil
		}
		if !Temporary(err) {
			<-l.slots
			return nil, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		l.log.Error(l.name+": accept failed; retrying", "error", err, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.done():
			t.Stop()
			<-l.slots
			return nil, net.ErrClosed
		}
	}
}

// Temporary reports whether an accept error passes: out of file
// descriptors or memory, a connection reset or aborted before it was
// accepted, a timeout.
func Temporary(err error) bool {
	if errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return false
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A connection may be closed to make room once it has waited
// evictAfter for its client to send something worth reading, or
// evictSilentAfter if its client never sent anything: Postfix speaks as
// soon as it connects (the milter's option negotiation, the policy
// request), so a connection silent that long is not Postfix at work.
const (
	evictAfter       = time.Second
	evictSilentAfter = 100 * time.Millisecond
	// progress is the least a read must bring to count as the client
	// getting on with it: a byte now and then does not.
	progress = 64
)

// evictIdle closes the connection that has waited longest for its
// client (silent ones first), if one has waited long enough, and waits
// for its slot; it reports whether it took one.
func (l *limited) evictIdle() bool {
	now := int64(time.Since(l.epoch))
	var victim *slotConn
	var vSince int64
	vSilent := false
	l.mu.Lock()
	for c := range l.conns {
		since := c.since.Load()
		if !c.reading.Load() || since == 0 {
			continue
		}
		silent := !c.spoke.Load()
		if waited := now - since; waited < int64(evictAfter) && (!silent || waited < int64(evictSilentAfter)) {
			continue
		}
		if victim == nil || (silent && !vSilent) || (silent == vSilent && since < vSince) {
			victim, vSince, vSilent = c, since, silent
		}
	}
	l.mu.Unlock()
	if victim == nil {
		return false
	}
	l.log.Warn(l.name+": connection limit reached; closed the connection waiting longest for its client", "max_connections", l.max,
		"remote", victim.RemoteAddr().String(), "waiting", time.Duration(now-vSince).Round(time.Millisecond).String(), "silent", vSilent)
	victim.Close()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-l.done():
		return false
	}
}

// slotConn gives its slot back when closed, once, and knows how long its
// client has kept it waiting: since is the start of the current wait
// (reads that bring less than progress bytes do not end it), reading
// whether a Read is under way, spoke whether the client ever sent
// anything.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
	epoch   time.Time
	since   atomic.Int64 // ns since epoch (monotonic), at least 1; 0: not waiting
	reading atomic.Bool
	spoke   atomic.Bool
}

func (c *slotConn) Read(p []byte) (int, error) {
	if c.since.Load() == 0 {
		c.since.Store(max(int64(time.Since(c.epoch)), 1))
	}
	c.reading.Store(true)
	n, err := c.Conn.Read(p)
	c.reading.Store(false)
	if n > 0 {
		c.spoke.Store(true)
	}
	if n >= progress {
		c.since.Store(0)
	}
	return n, err
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
