package mtasts

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func startSocketmap(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SocketmapServer{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Timeout: 100 * time.Millisecond,
		Lookup: func(ctx context.Context, name, key string) (string, bool, error) {
			switch key {
			case "enforced.example":
				return "secure match=mx.enforced.example servername=hostname", true, nil
			case "broken.example":
				return "", false, errors.New("store down,\nsorry")
			case "slow.example":
				<-ctx.Done()
				return "", false, ctx.Err()
			}
			return "", false, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

func TestSocketmap(t *testing.T) {
	addr := startSocketmap(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	ask := func(req string) string {
		t.Helper()
		if _, err := c.Write(AppendNetstring(nil, req)); err != nil {
			t.Fatal(err)
		}
		got, err := ReadNetstring(br, 100000)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// One connection, one request after another, as Postfix does.
	for req, want := range map[string]string{
		"postfix enforced.example": "OK secure match=mx.enforced.example servername=hostname",
		"postfix other.example":    "NOTFOUND ",
		"postfix broken.example":   "TEMP store down, sorry",
		"postfix slow.example":     "TIMEOUT context deadline exceeded",
		"postfix":                  `PERM request is not "NAME KEY"`,
	} {
		if got := ask(req); got != want {
			t.Errorf("%q: %q, want %q", req, got, want)
		}
	}
}

// TestSocketmapGarbage: what is not a netstring gets PERM and the
// connection closed; the server goes on serving others.
func TestSocketmapGarbage(t *testing.T) {
	addr := startSocketmap(t)
	for _, garbage := range []string{"GET / HTTP/1.0\r\n\r\n", "99999999:x", "5:abcdefg", "-1:,", "00003:a b,", strings.Repeat("1", 5000)} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(garbage))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		got, _ := io.ReadAll(c)
		c.Close()
		if !strings.Contains(string(got), "PERM ") {
			t.Errorf("%.20q: got %q, want PERM and a close", garbage, got)
		}
	}
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	c.Write(AppendNetstring(nil, "postfix enforced.example"))
	if got, err := ReadNetstring(bufio.NewReader(c), 1000); err != nil || !strings.HasPrefix(got, "OK ") {
		t.Errorf("after garbage: %q %v", got, err)
	}
}

func FuzzReadNetstring(f *testing.F) {
	f.Add("24:postfix enforced.example,")
	f.Add("0:,")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ReadNetstring(bufio.NewReader(strings.NewReader(s)), maxRequest)
		if err != nil {
			return
		}
		if len(got) > maxRequest || string(AppendNetstring(nil, got)) != s[:len(AppendNetstring(nil, got))] {
			t.Fatalf("%q read as %q", s, got)
		}
	})
}
