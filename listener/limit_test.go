package listener

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flaky fails its first Accepts with err, then accepts from a real
// listener.
type flaky struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (f *flaky) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", f.err)}
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tcpListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Out of file descriptors: Accept waits and retries, logged, and the
// next connection is served (issue 10.8).
func TestLimitRetriesTemporaryErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			var logs logBuf
			base := tcpListener(t)
			ln := Limit(&flaky{Listener: base, fails: 4, err: errno}, 10, "test", slog.New(slog.NewTextHandler(&logs, nil)))
			go func() {
				c, err := net.Dial("tcp", base.Addr().String())
				if err == nil {
					defer c.Close()
					io.ReadAll(c) //nolint:errcheck
				}
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatalf("accept: %v", err)
			}
			c.Close()
			if n := strings.Count(logs.String(), "accept failed; retrying"); n != 4 {
				t.Errorf("%d retries logged, want 4:\n%s", n, logs.String())
			}
		})
	}
	// A closed listener ends Accept.
	base := tcpListener(t)
	ln := Limit(base, 10, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed: %v", err)
	}
}

// At the cap, the next connection waits until one closes; the limit is
// logged once.
func TestLimitCapsConnections(t *testing.T) {
	var logs logBuf
	base := tcpListener(t)
	ln := Limit(base, 2, "test", slog.New(slog.NewTextHandler(&logs, nil)))
	for range 3 {
		c, err := net.Dial("tcp", base.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	a, _ := ln.Accept()
	b, _ := ln.Accept()
	got := make(chan net.Conn)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	select {
	case <-got:
		t.Fatal("third connection accepted past the cap of 2")
	case <-time.After(100 * time.Millisecond):
	}
	a.Close()
	a.Close() // closing twice frees one slot only
	select {
	case c := <-got:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a slot freed, but the waiting connection was not accepted")
	}
	b.Close()
	if n := strings.Count(logs.String(), "connection limit reached"); n != 1 {
		t.Errorf("limit logged %d times:\n%s", n, logs.String())
	}
	// Waiting for a slot ends when the listener closes.
	ln2 := Limit(tcpListener(t), 1, "test", slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := ln2.Accept(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := ln2.Accept(); done <- err }()
	time.Sleep(50 * time.Millisecond)
	ln2.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiting accept after close: %v", err)
	}
}

// Hostile: connections left idle (or fed a byte at a time) fill the
// limit. The one waiting longest for its client is closed to make room,
// logged; a connection whose client talks is never closed for this.
func TestLimitEvictsIdle(t *testing.T) {
	var logs logBuf
	base := tcpListener(t)
	ln := Limit(base, 2, "test", slog.New(slog.NewTextHandler(&logs, nil)))
	serve := func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			c.Write(buf[:n]) //nolint:errcheck
		}
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", base.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	idle := dial()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	go serve(sc)
	time.Sleep(300 * time.Millisecond)
	busy := dial()
	sc, _ = ln.Accept()
	go serve(sc)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // busy talks every 100 ms
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				busy.Write([]byte("x"))    //nolint:errcheck
				busy.Read(make([]byte, 1)) //nolint:errcheck
			}
		}
	}()
	time.Sleep(1200 * time.Millisecond)
	third := dial()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	select {
	case c := <-accepted:
		go serve(c)
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection waited for the idle one")
	}
	idle.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	if _, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	third.Write([]byte("y"))                               //nolint:errcheck
	third.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	if _, err := third.Read(make([]byte, 1)); err != nil {
		t.Fatalf("third not served: %v", err)
	}
	busy.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	if _, err := busy.Write([]byte("z")); err != nil {
		t.Fatalf("the talking connection was closed: %v", err)
	}
	if !strings.Contains(logs.String(), "closed the connection waiting longest") {
		t.Errorf("eviction not logged:\n%s", logs.String())
	}
}
