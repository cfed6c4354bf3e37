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
// Accept waits while max connections are open (the next ones wait in the
// kernel's backlog; logged once per burst), and retries the errors that
// pass (out of file descriptors, a connection aborted before it was
// accepted) with a backoff of up to a second, logged, as net/http does.
// Only a closed listener ends Accept. name says whose connections these
// are in the log.
func Limit(ln net.Listener, max int, name string, log *slog.Logger) net.Listener {
	return &limited{Listener: ln, name: name, log: log, slots: make(chan struct{}, max), max: max, closed: make(chan struct{})}
}

type limited struct {
	net.Listener
	name  string
	log   *slog.Logger
	slots chan struct{}
	max   int

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
			return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
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

// slotConn gives its slot back when closed, once.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
