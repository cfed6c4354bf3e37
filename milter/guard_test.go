package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"
)

// countConn records the writes that reach the connection.
type countConn struct {
	net.Conn
	writes [][]byte
	in     io.Reader
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *countConn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *countConn) Close() error               { return nil }

// written is a milter packet as go-milter writes it: length and command,
// then the data, in two writes.
func written(cmd byte, data string) [][]byte {
	hdr := make([]byte, 5)
	binary.BigEndian.PutUint32(hdr, uint32(len(data)+1))
	hdr[4] = cmd
	if data == "" {
		return [][]byte{hdr}
	}
	return [][]byte{hdr, []byte(data)}
}

// The modifications of a message go out with its final answer in one
// write; an answer alone, progress and the option negotiation at once;
// nothing whole is held across a read, nor beyond maxHeld bytes; the
// bytes are the same.
func TestGuardWrites(t *testing.T) {
	cases := []struct {
		name   string
		writes [][]byte
		read   bool
		want   []int // the sizes of the writes that reach the connection
	}{
		{"negotiation", written('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"), false, []int{17}},
		{"continue", written('c', ""), false, []int{5}},
		{"header inserted, then accept", append(append(written('i', "\x00\x00\x00\x00Authentication-Results\x00mx; spf=pass\x00"), written('m', "\x00\x00\x00\x01X-Spam\x00\x00")...), written('a', "")...),
			false, []int{45 + 17 + 5}},
		{"progress", written('p', ""), false, []int{5}},
		{"reply code", written('y', "550 5.7.1 no\x00"), false, []int{18}},
		{"a modification, then a read", written('h', "X\x00y\x00"), true, []int{9}},
		{"a modification alone", written('h', "X\x00y\x00"), false, nil},
		{"a large body", append(written('b', string(make([]byte, maxHeld))), written('b', "x")...), false, []int{5 + maxHeld}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &countConn{in: bytes.NewReader(written('Q', "")[0])}
			g := &frameGuard{Conn: c, log: slog.New(slog.DiscardHandler)}
			var all []byte
			for _, w := range tc.writes {
				if n, err := g.Write(w); n != len(w) || err != nil {
					t.Fatalf("write: %d %v", n, err)
				}
				all = append(all, w...)
			}
			if tc.read {
				g.Read(make([]byte, 16)) //nolint:errcheck
			}
			var sizes []int
			var got []byte
			for _, w := range c.writes {
				sizes = append(sizes, len(w))
				got = append(got, w...)
			}
			if len(sizes) != len(tc.want) || !bytes.Equal(got, all[:len(got)]) {
				t.Fatalf("writes %v, want %v", sizes, tc.want)
			}
			for i := range sizes {
				if sizes[i] != tc.want[i] {
					t.Fatalf("writes %v, want %v", sizes, tc.want)
				}
			}
		})
	}
}

// A read deadline holds through the guard, also one set while a read
// waits (the guard holds its lock then): go-milter's idle timeout and a
// shutdown's wake-up depend on it.
func TestGuardDeadlines(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	g := &frameGuard{Conn: a, log: slog.New(slog.DiscardHandler)}
	defer g.Close()
	g.SetReadDeadline(time.Now().Add(50 * time.Millisecond)) //nolint:errcheck
	start := time.Now()
	if _, err := g.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("noted deadline: %v after %v", err, time.Since(start))
	}
	g.SetReadDeadline(time.Time{}) //nolint:errcheck
	done := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	g.SetReadDeadline(time.Now()) //nolint:errcheck
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("deadline while reading: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a deadline set while a read waits did not end it")
	}
}

// The reads after which the MTA waits for our answer: the end of the
// message, the negotiation, quit; not a header, a body chunk, a macro.
func TestEndsCommand(t *testing.T) {
	join := func(ps ...[][]byte) []byte {
		var b []byte
		for _, p := range ps {
			b = append(b, bytes.Join(p, nil)...)
		}
		return b
	}
	for _, tc := range []struct {
		read []byte
		want bool
	}{
		{join(written('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")), true},
		{join(written('L', "Subject\x00hi\x00"), written('N', ""), written('B', "body\r\n"), written('E', "")), true},
		{join(written('Q', "")), true},
		{join(written('L', "Subject\x00hi\x00")), false},
		{join(written('B', "body\r\n")), false},
		{join(written('D', "Ei\x00ABC\x00")), false},
		{join(written('N', "")), false},
		{[]byte("E"), false},
	} {
		if got := EndsCommand(tc.read); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.read, got, tc.want)
		}
	}
}
