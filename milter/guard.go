package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
)

// maxPacket bounds one milter packet. Postfix sends body chunks of at
// most 64 KiB and each header field in one packet (header_size_limit,
// 100 KiB by default); 16 MiB leaves room for any sane setting.
const maxPacket = 16 << 20

// guardListener hands out connections that check each milter packet
// before go-milter reads it. go-milter runs a connection without
// recovering panics, and panics on an empty packet and on connect, MAIL
// and RCPT packets without their NUL terminators, which would end the
// whole daemon; it also allocates whatever length a packet claims (up to
// 512 MiB) before reading it. A bad packet closes that one connection
// with a log line naming the client.
type guardListener struct {
	net.Listener
	log *slog.Logger
}

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frameGuard{Conn: c, log: l.log}, nil
}

// frameGuard reads whole packets (a 4-byte big-endian length, then the
// command byte and its data), checks them, and only then hands their
// bytes to the reader.
type frameGuard struct {
	net.Conn
	log *slog.Logger
	// mu guards the buffers, which go back to guardBuffers at Close
	// (a shutdown may close the connection while it is being read).
	mu      sync.Mutex
	bufs    *guardBufs
	pending []byte // checked bytes of the current packet not yet read
	bad     error
}

// guardBufs are one connection's read buffer and packet buffer, kept for
// the next connection: a connection carries one or a few messages, and
// allocating them anew was a fifth of a message's garbage.
type guardBufs struct {
	br  *bufio.Reader
	buf []byte // the current packet, reused
}

var guardBuffers = sync.Pool{New: func() any { return &guardBufs{} }}

// maxPooledPacket bounds the packet buffers kept for reuse.
const maxPooledPacket = 128 << 10

// Close closes the connection and gives its buffers back.
func (g *frameGuard) Close() error {
	err := g.Conn.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	if b := g.bufs; b != nil {
		g.bufs, g.pending = nil, nil
		if b.br != nil {
			b.br.Reset(nil)
		}
		if cap(b.buf) > maxPooledPacket {
			b.buf = nil
		}
		guardBuffers.Put(b)
	}
	if g.bad == nil {
		g.bad = net.ErrClosed
	}
	return err
}

func (g *frameGuard) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		if g.bad != nil {
			return 0, g.bad
		}
		if err := g.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

// next reads and checks one packet into pending.
func (g *frameGuard) next() error {
	if g.bufs == nil {
		g.bufs = guardBuffers.Get().(*guardBufs)
		// Small packets come through the buffer; body chunks (up to
		// 64 KB) are read past it, straight into buf.
		if g.bufs.br == nil {
			g.bufs.br = bufio.NewReaderSize(g.Conn, 4<<10)
		} else {
			g.bufs.br.Reset(g.Conn)
		}
	}
	b := g.bufs
	var hdr [4]byte
	if _, err := io.ReadFull(b.br, hdr[:]); err != nil {
		return err
	}
	l := int(binary.BigEndian.Uint32(hdr[:]))
	if l == 0 || l > maxPacket {
		return g.fail(fmt.Errorf("packet of %d bytes", l))
	}
	b.buf = append(b.buf[:0], hdr[:]...)
	// Grow with what arrives, not with what the length claims.
	for left := l; left > 0; {
		k := min(left, 64<<10)
		n := len(b.buf)
		b.buf = slices.Grow(b.buf, k)[:n+k]
		if _, err := io.ReadFull(b.br, b.buf[n:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		left -= k
	}
	if err := checkPacket(b.buf[4], b.buf[5:]); err != nil {
		return g.fail(err)
	}
	g.pending = b.buf
	return nil
}

// fail logs why the connection ends and closes it. The error it returns
// wraps net.ErrClosed, which go-milter ends the session on quietly: the
// line here is the one that says why.
func (g *frameGuard) fail(err error) error {
	g.log.Warn("milter: "+err.Error()+": not the milter protocol, or broken; connection closed", "remote", g.RemoteAddr().String())
	g.bad = fmt.Errorf("milter: %v: %w", err, net.ErrClosed)
	g.Conn.Close() // the buffers go back when go-milter closes it
	return g.bad
}

// checkPacket checks what go-milter's parser takes for granted.
func checkPacket(cmd byte, data []byte) error {
	switch cmd {
	case 'C': // connect: hostname NUL, family, [port, address NUL]
		i := bytes.IndexByte(data, 0)
		if i < 0 || i+1 >= len(data) {
			return errors.New("connect packet without host name terminator and family")
		}
	case 'M', 'R': // MAIL, RCPT: address NUL, [ESMTP args NUL ...]
		if bytes.IndexByte(data, 0) < 0 {
			return fmt.Errorf("%c packet without NUL terminator", cmd)
		}
	}
	return nil
}
