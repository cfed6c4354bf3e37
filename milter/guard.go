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
	// out holds what go-milter wrote that has not gone out yet; scanned
	// is how far it has been read as whole packets (see Write).
	out     []byte
	scanned int
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
	// Whatever is held goes out before we wait for the MTA (it may be
	// waiting for it).
	if err := g.flush(g.scanned); err != nil {
		return 0, err
	}
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

// EndsCommand says whether data read from the MTA ends with a command
// it waits on our answer to: the end of the message (an 'E' packet
// without data, as Postfix sends it), the option negotiation, or quit.
// Our answer then carries the ACK (listener.AckUnless). The rest of a
// message comes without waiting for answers (we negotiate none), and
// is acknowledged at once. A body chunk that happens to end in the
// same bytes costs at most one delayed ACK.
func EndsCommand(read []byte) bool {
	n := len(read)
	switch {
	case n >= 5 && (string(read[n-5:]) == "\x00\x00\x00\x01E" || string(read[n-5:]) == "\x00\x00\x00\x01Q"):
		return true
	case n >= 17 && string(read[n-17:n-12]) == "\x00\x00\x00\x0dO":
		return true
	}
	return false
}

// maxHeld bounds what Write holds back.
const maxHeld = 64 << 10

// Write sends go-milter's packets, fewer system calls for the same
// bytes: go-milter writes each packet's length and command, then its
// data, in two writes, and the modifications of a message (its
// Authentication-Results field, a forged field deleted, ...) each as a
// packet before the final answer. The MTA reads none of them until the
// final answer (continue, accept, reject, tempfail, discard, reply code,
// progress, the option negotiation): so whole packets are held until
// one that is not a modification, and go out with it in one write.
// No whole packet is held across a read, nor beyond maxHeld bytes.
func (g *frameGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bad != nil {
		return 0, g.bad
	}
	g.out = append(g.out, p...)
	end := 0
	for len(g.out)-g.scanned >= 5 {
		l := int(binary.BigEndian.Uint32(g.out[g.scanned:]))
		if len(g.out)-g.scanned-4 < l {
			break
		}
		cmd := g.out[g.scanned+4]
		g.scanned += 4 + l
		if !modification(cmd) {
			end = g.scanned
		}
	}
	if len(g.out) > maxHeld {
		end = g.scanned
	}
	if err := g.flush(end); err != nil {
		return 0, err
	}
	return len(p), nil
}

// modification says whether a packet the milter writes is one of the
// end-of-message modifications, which the MTA reads after the answer.
func modification(cmd byte) bool {
	switch cmd {
	case '+', '-', '2', 'b', 'e', 'h', 'i', 'm', 'q':
		// add/delete recipient, add recipient with args, replace body,
		// change sender, add/insert/change header, quarantine
		return true
	}
	return false
}

// flush writes the first n bytes held.
func (g *frameGuard) flush(n int) error {
	if n == 0 {
		return nil
	}
	_, err := g.Conn.Write(g.out[:n])
	rest := copy(g.out, g.out[n:])
	g.out = g.out[:rest]
	g.scanned = max(g.scanned-n, 0)
	if rest == 0 && cap(g.out) > maxHeld {
		g.out = nil
	}
	return err
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
