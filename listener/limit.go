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
		conns: map[*slotConn]struct{}{}}
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
		if l.evictIdle() {
			break
		}
		if !l.full.Swap(true) {
			l.log.Warn(l.name+": connection limit reached; new connections wait until one closes", "max_connections", l.max)
		}
		select {
		case l.slots <- struct{}{}:
		case <-l.done():
			return nil, net.ErrClosed
		}
	}
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			sc := &slotConn{Conn: c}
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

// evictAfter is how long a connection must have waited for its client
// before it may be closed to make room.
const evictAfter = time.Second

// evictIdle closes the connection that has waited longest for its
// client, if one has waited evictAfter, and waits for its slot; it
// reports whether it took one.
func (l *limited) evictIdle() bool {
	now := time.Now().UnixNano()
	var oldest *slotConn
	var since int64
	l.mu.Lock()
	for c := range l.conns {
		if s := c.waiting.Load(); s != 0 && now-s >= int64(evictAfter) && (oldest == nil || s < since) {
			oldest, since = c, s
		}
	}
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	l.log.Warn(l.name+": connection limit reached; closed the connection waiting longest for its client", "max_connections", l.max,
		"remote", oldest.RemoteAddr().String(), "waiting", time.Duration(now-since).Round(time.Millisecond).String())
	oldest.Close()
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

// slotConn gives its slot back when closed, once, and knows since when
// it has waited for its client (a Read under way; 0: none).
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
	waiting atomic.Int64 // unix ns
}

func (c *slotConn) Read(p []byte) (int, error) {
	c.waiting.Store(time.Now().UnixNano())
	n, err := c.Conn.Read(p)
	c.waiting.Store(0)
	return n, err
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
