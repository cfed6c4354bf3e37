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
type quickAckListener struct{ net.Listener }

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
	qc := &quickAckConn{TCPConn: tc, raw: raw}
	qc.quickAck()
	return qc, nil
}

type quickAckConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func (c *quickAckConn) quickAck() {
	c.raw.Control(func(fd uintptr) { //nolint:errcheck
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpQuickAck, 1) //nolint:errcheck
	})
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	c.quickAck()
	return n, err
}

// tcpQuickAck is TCP_QUICKACK (linux/tcp.h).
const tcpQuickAck = 12

// WithoutQuickAck undoes Listen's quick acknowledgements, for a protocol
// whose client writes each request whole, in one write, and waits for
// the answer (Postfix's socketmap client flushes a whole netstring):
// the answer carries the ACK, and setting TCP_QUICKACK after every read
// would only cost a system call per request.
func WithoutQuickAck(ln net.Listener) net.Listener {
	if q, ok := ln.(quickAckListener); ok {
		return q.Listener
	}
	return ln
}
