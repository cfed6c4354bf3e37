package listener

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in, want string
		remote   bool
		err      string
	}{
		{"inet:127.0.0.1:8895", "inet:127.0.0.1:8895", false, ""},
		{"inet:8895@127.0.0.1", "inet:127.0.0.1:8895", false, ""},
		{"inet:8895@localhost", "inet:127.0.0.1:8895", false, ""},
		{"inet:[::1]:8895", "inet:[::1]:8895", false, ""},
		{"unix:/run/wehr/milter.sock", "unix:/run/wehr/milter.sock", false, ""},
		{"local:/run/wehr/milter.sock", "unix:/run/wehr/milter.sock", false, ""},
		{"unix:run/milter.sock", "", false, "absolute"},
		{"inet:192.0.2.1:8895", "", false, "not on loopback"},
		{"inet:192.0.2.1:8895", "inet:192.0.2.1:8895", true, ""},
		{"inet:mx.example:8895", "", false, "IP address"},
		{"inet:127.0.0.1:0", "", false, "bad port"},
		{"127.0.0.1:8895", "", false, "unknown kind"},
		{"tcp", "", false, "want inet"},
	}
	for _, tc := range tests {
		a, err := ParseAddress(tc.in, tc.remote)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || a.String() != tc.want {
			t.Errorf("%s: %v %v, want %s", tc.in, a, err, tc.want)
		}
	}
}

func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "m.sock")
	a := Address{Network: "unix", Address: path}
	// A stale socket file (nobody listening) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(a, SocketPerms{Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	// A socket in use is not taken over.
	if _, err := Listen(a, SocketPerms{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file left after close: %v", err)
	}
	// A regular file is never removed.
	os.WriteFile(path, []byte("x"), 0o600) //nolint:errcheck
	if _, err := Listen(a, SocketPerms{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
}

// TCP listeners acknowledge every read at once, or, with AckUnless,
// every read that does not end a request; a Unix socket's listener is
// left as it is.
func TestAckUnless(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free.Close()
	a, err := ParseAddress("inet:"+free.Addr().String(), false)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(a, SocketPerms{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// exchange has a client write each part once the server has read
	// the one before, and returns the server side of the connection.
	exchange := func(ln net.Listener, parts ...string) *quickAckConn {
		t.Helper()
		read := make(chan bool)
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return
			}
			defer c.Close()
			for _, p := range parts {
				c.Write([]byte(p))
				<-read
			}
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		qc, ok := c.(*quickAckConn)
		if !ok {
			t.Fatalf("Listen's TCP connection is a %T, want quick acknowledgements", c)
		}
		for _, p := range parts {
			buf := make([]byte, 100)
			got := 0
			for got < len(p) {
				n, err := c.Read(buf[got:])
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
			read <- true
		}
		return qc
	}
	before := exchange(ln, "a=b\n", "\n").acks.Load()
	if before != 3 { // at accept, and after each read
		t.Errorf("plain: %d quick acknowledgements, want 3", before)
	}
	whole := AckUnless(ln, func(b []byte) bool { return strings.HasSuffix(string(b), "\n\n") })
	// AckUnless: the read inside a request leaves its ACK owed. The
	// client writes the rest only once the server has sent it, which it
	// does when its next read would wait: one quick acknowledgement.
	var waiting atomic.Pointer[quickAckConn]
	go func() {
		c, err := net.Dial("tcp", whole.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("a=b\n"))
		for ln := (*quickAckConn)(nil); ; time.Sleep(time.Millisecond) {
			if ln = waiting.Load(); ln != nil && ln.acks.Load() > 0 {
				break
			}
		}
		c.Write([]byte("c=d\n\n"))
		io.ReadAll(c)
	}()
	c, err := whole.Accept()
	if err != nil {
		t.Fatal(err)
	}
	qc := c.(*quickAckConn)
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // no ACK: the client never writes the rest
	waiting.Store(qc)
	if got := readAll(t, c, len("a=b\nc=d\n\n")); got != "a=b\nc=d\n\n" {
		t.Errorf("read %q", got)
	}
	c.Close()
	if n := qc.acks.Load(); n != 1 {
		t.Errorf("AckUnless, the rest comes later: %d quick acknowledgements, want 1", n)
	}
	// When the rest is already there, no acknowledgement is sent: the
	// answer carries it.
	done := make(chan bool)
	go func() {
		c, err := net.Dial("tcp", whole.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("a=b\nc=d\n\n"))
		<-done
	}()
	c, err = whole.Accept()
	if err != nil {
		t.Fatal(err)
	}
	qc = c.(*quickAckConn)
	// One write of 11 bytes is one segment on loopback: once the first
	// 4 bytes are read, the rest is there.
	buf := make([]byte, 4)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "a=b\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if got := readAll(t, c, len("c=d\n\n")); got != "c=d\n\n" {
		t.Errorf("read %q", got)
	}
	close(done)
	c.Close()
	if n := qc.acks.Load(); n != 0 {
		t.Errorf("AckUnless, the rest already there: %d quick acknowledgements, want none", n)
	}
	u, err := ParseAddress("unix:"+t.TempDir()+"/s.sock", false)
	if err != nil {
		t.Fatal(err)
	}
	uln, err := Listen(u, SocketPerms{})
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	if AckUnless(uln, nil) != uln {
		t.Error("a Unix socket's listener was changed")
	}
}

// An accepted TCP connection has keepalive on, with Go's timings,
// though it was set on the listening socket only.
func TestKeepaliveInherited(t *testing.T) {
	ln, err := Listen(Address{Network: "tcp", Address: "127.0.0.1:0"}, SocketPerms{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	raw, err := a.(*quickAckConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		{"TCP_NODELAY", syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1},
	} {
		var got int
		var gerr error
		raw.Control(func(fd uintptr) { got, gerr = syscall.GetsockoptInt(int(fd), o.level, o.opt) }) //nolint:errcheck
		if gerr != nil || got != o.want {
			t.Errorf("%s = %d (%v), want %d", o.name, got, gerr, o.want)
		}
	}
}

// readAll reads n bytes from c.
func readAll(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}
