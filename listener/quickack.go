package listener

import (
	"net"
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
	acks  int // quick acknowledgements set (for tests)
}

func (c *quickAckConn) quickAck() {
	c.acks++
	c.raw.Control(func(fd uintptr) { //nolint:errcheck
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpQuickAck, 1) //nolint:errcheck
	})
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if c.whole == nil || !c.whole(b[:n]) {
		c.quickAck()
	}
	return n, err
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
