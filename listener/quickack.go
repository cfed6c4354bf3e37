package listener

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
)

// quickAckListener hands out connections that acknowledge every read at
// once. Postfix writes milter and policy packets without TCP_NODELAY; with
// Nagle on its side and delayed ACKs on ours, each small write waits about
// 40 ms for our ACK (the stall OpenDKIM shows over TCP). Linux clears
// TCP_QUICKACK after use, so it is set again after every read.
type quickAckListener struct {
	net.Listener
	whole func([]byte) bool // AckUnless's; nil: acknowledge every read
}

func (l quickAckListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	qc := &quickAckConn{TCPConn: tc, raw: raw, whole: l.whole}
	if l.whole == nil {
		// With AckUnless, the first read is acknowledged by its rule:
		// setting TCP_QUICKACK after a read sends the pending ACK at
		// once, and the first request is answered anyway.
		qc.quickAck()
	}
	return qc, nil
}

type quickAckConn struct {
	*net.TCPConn
	raw   syscall.RawConn
	whole func([]byte) bool
	acks  atomic.Int32 // quick acknowledgements set (for tests)

	// With AckUnless, a read that ended inside a request leaves its ACK
	// owed: the next read sends it at once if it has to wait, and not at
	// all if the rest is already there (then Postfix's Nagle held
	// nothing back, and our answer carries the ACK).
	owed   bool
	rb     []byte // the read in progress, for tryRead
	rn     int
	rerr   error
	readFn func(fd uintptr) bool // tryRead, made once
}

func (c *quickAckConn) quickAck() {
	c.raw.Control(c.setQuickAck) //nolint:errcheck
}

func (c *quickAckConn) setQuickAck(fd uintptr) {
	c.acks.Add(1)
	syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpQuickAck, 1) //nolint:errcheck
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	if c.whole == nil {
		n, err := c.TCPConn.Read(b)
		c.quickAck()
		return n, err
	}
	if len(b) == 0 {
		return 0, nil
	}
	if c.readFn == nil {
		c.readFn = c.tryRead
	}
	c.rb = b
	err := c.raw.Read(c.readFn)
	n := c.rn
	if err == nil {
		err = c.rerr
	}
	c.rb, c.rn, c.rerr = nil, 0, nil
	if n > 0 {
		c.owed = !c.whole(b[:n])
	}
	return n, err
}

// tryRead reads what is there; when nothing is, it sends an owed ACK
// and has the poller wait.
func (c *quickAckConn) tryRead(fd uintptr) bool {
	for {
		n, err := syscall.Read(int(fd), c.rb)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if c.owed {
				c.owed = false
				c.setQuickAck(fd)
			}
			return false
		case err != nil:
			c.rerr = &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError("read", err)}
		case n == 0:
			c.rerr = io.EOF
		default:
			c.rn = n
		}
		return true
	}
}

// tcpQuickAck is TCP_QUICKACK (linux/tcp.h).
const tcpQuickAck = 12

// AckUnless makes ln's connections skip the quick acknowledgement after
// a read that whole says ends a request: Postfix then waits for the
// answer, which carries the ACK, and setting TCP_QUICKACK would only cost
// a system call per request. A read that ends inside a request (a long
// one, in several segments) is still acknowledged at once, so that
// Postfix's Nagle-held rest comes without the 40 ms delay. ln must come
// from Listen; other listeners are returned as they are.
func AckUnless(ln net.Listener, whole func(read []byte) bool) net.Listener {
	if q, ok := ln.(quickAckListener); ok {
		q.whole = whole
		return q
	}
	return ln
}
