package listener

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
	before := exchange(ln, "a=b\n", "\n").acks
	if before != 3 { // at accept, and after each read
		t.Errorf("plain: %d quick acknowledgements, want 3", before)
	}
	whole := AckUnless(ln, func(b []byte) bool { return strings.HasSuffix(string(b), "\n\n") })
	if c := exchange(whole, "a=b\n", "c=d\n\n"); c.acks != 1 {
		t.Errorf("AckUnless: %d quick acknowledgements, want 1 (after the read inside a request)", c.acks)
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
