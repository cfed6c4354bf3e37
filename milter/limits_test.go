package milter

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/dkimkeys"
)

// Issue 10.8: a session stalled mid-header is closed after the idle
// timeout, not held for ever.
func TestStalledSessionClosed(t *testing.T) {
	addr, _ := startServer(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond }, nil)
	c := milter.NewClient("tcp", addr, milter.WithReadTimeout(10*time.Second), milter.WithWriteTimeout(10*time.Second))
	s, err := c.Session(milter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, step := range []func() (*milter.Action, error){
		func() (*milter.Action, error) { return s.Conn("h", milter.FamilyInet, 4000, "203.0.113.5") },
		func() (*milter.Action, error) { return s.Helo("h") },
		func() (*milter.Action, error) { return s.Mail("x@evil.example", "") },
		func() (*milter.Action, error) { return s.Rcpt("user@mx.test", "") },
		func() (*milter.Action, error) { return s.DataStart() },
		func() (*milter.Action, error) { return s.HeaderField("From", " a@none.example", nil) },
	} {
		if _, err := step(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // stalled mid-header, past the idle timeout
	if _, err := s.HeaderEnd(); err == nil {
		if _, _, err = s.End(); err == nil {
			t.Fatal("the stalled session was still served after the idle timeout")
		}
	}
}

// A raw connection that never speaks is closed too.
func TestSilentConnectionClosed(t *testing.T) {
	addr, _ := startServer(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond }, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("not closed by the server: %v", err)
	}
}

// Issue 10.10: outbound mail has the inbound header cap.
func TestOutboundHeaderCap(t *testing.T) {
	keys, err := (&dkimkeys.Store{Dir: t.TempDir()}).Load()
	if err != nil {
		t.Fatal(err)
	}
	c, logs := start(t, func(c *Config) { c.HeaderBytes = 4096; c.Keys = keys }, nil)
	_, act := send(t, c, msg{ip: "127.0.0.1", helo: "web", from: "a@example.org",
		headers: [][2]string{{"From", " a@example.org"}, {"X-Pad", " " + strings.Repeat("x", 5000)}}, body: "x\n"})
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 552 || !strings.Contains(act.SMTPReply, "5.3.4 Message header too large") {
		t.Fatalf("%+v", act)
	}
	if !strings.Contains(logs.String(), "check=limits") {
		t.Errorf("log: %s", logs.String())
	}
}
