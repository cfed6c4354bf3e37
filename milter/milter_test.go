package milter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/setting"
)

const zone = `
_dmarc.bank.example.     300 IN TXT "v=DMARC1; p=reject"
bank.example.            300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.softbank.example. 300 IN TXT "v=DMARC1; p=reject"
softbank.example.        300 IN TXT "v=spf1 ip4:198.51.100.0/24 ~all"
evil.example.            300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
5.113.0.203.in-addr.arpa. 300 IN PTR mail.evil.example.
mail.evil.example.       300 IN A 203.0.113.5
_dmarc.none.example.     300 IN TXT "v=DMARC1; p=none"
`

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// start runs a milter server on loopback and returns a client for it and
// the server's log.
func start(t *testing.T, mod func(*Config), engine *mailauth.Engine) (*milter.Client, *logBuffer) {
	t.Helper()
	addr, logs := startServer(t, mod, engine)
	return milter.NewClient("tcp", addr, milter.WithReadTimeout(10*time.Second), milter.WithWriteTimeout(10*time.Second)), logs
}

// testEngine is the engine over the test zone.
func testEngine(t testing.TB) *mailauth.Engine {
	t.Helper()
	srv := dnstest.New(t, zone)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return mailauth.NewEngine(res, mailauth.Config{AuthservID: "mx.test"})
}

// startServer starts a milter server on a loopback port and returns its
// address.
func startServer(t testing.TB, mod func(*Config), engine *mailauth.Engine) (string, *logBuffer) {
	t.Helper()
	if engine == nil {
		engine = testEngine(t)
	}
	cfg := Config{AuthservID: "mx.test", TrustedNetworks: setting.Networks("127.0.0.0/8"), OutboundDaemons: []string{"ORIGINATING"}}
	if mod != nil {
		mod(&cfg)
	}
	logs := &logBuffer{}
	s := New(engine, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	ln, err := listener.Listen(listener.Address{Network: "tcp", Address: "127.0.0.1:0"}, listener.SocketPerms{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), logs
}

type msg struct {
	ip, helo, from string
	macros         map[milter.MacroName]string
	headers        [][2]string // name, value as Postfix sends it with leading space
	body           string
}

// send runs one message through the milter as Postfix would.
func send(t *testing.T, c *milter.Client, m msg) ([]milter.ModifyAction, *milter.Action) {
	t.Helper()
	mac := milter.NewMacroBag()
	for k, v := range m.macros {
		mac.Set(k, v)
	}
	s, err := c.Session(mac)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.ProtocolOption(milter.OptHeaderLeadingSpace) {
		t.Fatal("leading-space handling not negotiated")
	}
	if _, err := s.Conn(m.helo, milter.FamilyInet, 40000, m.ip); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Helo(m.helo); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mail(m.from, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rcpt("user@mx.test", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DataStart(); err != nil {
		t.Fatal(err)
	}
	for _, h := range m.headers {
		if _, err := s.HeaderField(h[0], h[1], nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	body := strings.ReplaceAll(m.body, "\n", "\r\n")
	for len(body) > 0 {
		n := min(len(body), 60000)
		if _, err := s.BodyChunk([]byte(body[:n])); err != nil {
			t.Fatal(err)
		}
		body = body[n:]
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

func TestForgedHeadersRemoved(t *testing.T) {
	c, _ := start(t, nil, nil)
	mods, act := send(t, c, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{
			{"Authentication-Results", " mx.test; spf=pass smtp.mailfrom=ceo@bank.example"},
			{"Received", " from somewhere"},
			{"Authentication-Results", " other.example; dkim=pass header.d=x.example"},
			{"From", " a@none.example"},
			{"Authentication-Results", " mx.test (forged; with semicolon);\n\tdmarc=pass header.from=bank.example"},
			{"X-Wehr-Quarantine", " no"},
			{"Subject", " hello"},
			{"X-Authentication-Results", " MX.TEST; dkim=pass"},
			{"Authentication-Results", " (leading comment) mx.test; none"},
		}, body: "hi\n"})
	if act.Type != milter.ActionAccept {
		t.Fatalf("action %v", act)
	}
	var got []string
	for _, m := range mods {
		switch m.Type {
		case milter.ActionChangeHeader:
			if m.HeaderValue != "" {
				t.Errorf("change with a value: %+v", m)
			}
			got = append(got, m.HeaderName+"#"+itoa(int(m.HeaderIndex)))
		case milter.ActionInsertHeader:
			got = append(got, "insert "+m.HeaderName+"@"+itoa(int(m.HeaderIndex)))
			if m.HeaderName == "Authentication-Results" {
				if !strings.HasPrefix(m.HeaderValue, " mx.test;") {
					t.Errorf("our A-R value %q: want a leading space and our id", m.HeaderValue)
				}
				if _, _, err := authres.Parse(m.HeaderValue); err != nil {
					t.Errorf("our A-R does not parse: %v", err)
				}
			}
		default:
			t.Errorf("unexpected modification %+v", m)
		}
	}
	// Deletes from the highest index down, before our insert at the top.
	want := "Authentication-Results#4 X-Authentication-Results#1 X-Wehr-Quarantine#1 Authentication-Results#3 Authentication-Results#1 insert Authentication-Results@0"
	if strings.Join(got, " ") != want {
		t.Fatalf("modifications\n%s\nwant\n%s", strings.Join(got, " "), want)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestRejectAndQuarantine(t *testing.T) {
	c, _ := start(t, nil, nil)
	_, act := send(t, c, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{{"From", " CEO <ceo@bank.example>"}, {"Subject", " pay"}}, body: "Pay now.\n"})
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 550 ||
		!strings.HasPrefix(act.SMTPReply, "550 5.7.1 Message rejected: bank.example publishes DMARC policy reject") {
		t.Fatalf("spoof: %+v", act)
	}

	mods, act := send(t, c, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{{"From", " ceo@softbank.example"}, {"Subject", " pay"}}, body: "Pay now.\n"})
	if act.Type != milter.ActionAccept || len(mods) != 2 || mods[0].HeaderName != "X-Wehr-Quarantine" || mods[1].HeaderName != "Authentication-Results" ||
		mods[0].HeaderIndex != 0 || mods[1].HeaderIndex != 0 {
		t.Fatalf("quarantine: %+v %+v", act, mods)
	}
	if !strings.Contains(mods[0].HeaderValue, "softbank.example") {
		t.Errorf("marker %q", mods[0].HeaderValue)
	}

	// With hold, Postfix's quarantine action instead of the marker.
	c2, _ := start(t, func(c *Config) { c.Quarantine = QuarantineHold }, nil)
	mods, _ = send(t, c2, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{{"From", " ceo@softbank.example"}}, body: "x\n"})
	if len(mods) != 2 || mods[0].Type != milter.ActionQuarantine {
		t.Fatalf("hold: %+v", mods)
	}
}

func TestOutboundNotVerified(t *testing.T) {
	c, _ := start(t, nil, nil)
	spoof := msg{helo: "web.local", from: "x@evil.example", headers: [][2]string{{"From", " ceo@bank.example"}}, body: "x\n"}
	for name, m := range map[string]msg{
		"trusted network": func() msg { m := spoof; m.ip = "127.0.0.1"; return m }(),
		"authenticated": func() msg {
			m := spoof
			m.ip = "203.0.113.5"
			m.macros = map[milter.MacroName]string{milter.MacroAuthAuthen: "alice"}
			return m
		}(),
		"outbound smtpd": func() msg {
			m := spoof
			m.ip = "203.0.113.5"
			m.macros = map[milter.MacroName]string{milter.MacroDaemonName: "ORIGINATING"}
			return m
		}(),
	} {
		mods, act := send(t, c, m)
		if act.Type != milter.ActionAccept || len(mods) != 0 {
			t.Errorf("%s: %+v %+v", name, act, mods)
		}
	}
}

// panicResolver panics on every lookup.
type panicResolver struct{}

func (panicResolver) LookupTXT(context.Context, string) ([]string, error) { panic("test: TXT") }
func (panicResolver) LookupMX(context.Context, string) ([]*net.MX, error) { panic("test: MX") }
func (panicResolver) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	panic("test: IP")
}
func (panicResolver) LookupAddr(context.Context, string) ([]string, error) { panic("test: PTR") }
func (panicResolver) Exists(context.Context, string) (bool, error)         { panic("test: exists") }

func TestPanicBecomesTempfail(t *testing.T) {
	// An engine whose DNS panics: the panic must become a 451, not
	// the end of the daemon.
	engine := mailauth.NewEngine(panicResolver{}, mailauth.Config{AuthservID: "mx.test"})
	c, logs := start(t, nil, engine)
	_, act := send(t, c, msg{ip: "203.0.113.5", helo: "h.example", from: "x@evil.example",
		headers: [][2]string{{"From", " a@none.example"}}, body: "x\n"})
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 451 || !strings.HasPrefix(act.SMTPReply, "451 4.") {
		t.Fatalf("panic: %+v", act)
	}
	// The daemon is still serving.
	_, act = send(t, c, msg{ip: "203.0.113.5", helo: "h.example", from: "x@evil.example",
		headers: [][2]string{{"From", " a@none.example"}}, body: "x\n"})
	if act.SMTPCode != 451 {
		t.Fatalf("second message: %+v", act)
	}
	if !strings.Contains(logs.String(), "internal error in") || !strings.Contains(logs.String(), "answered 451") || !strings.Contains(logs.String(), "stack=") {
		t.Fatalf("no log line for the panic:\n%s", logs)
	}
}

func TestLargeBodySpills(t *testing.T) {
	dir := t.TempDir()
	c, _ := start(t, func(c *Config) { c.BodyMemory = 1000; c.TempDir = dir }, nil)
	mods, act := send(t, c, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{{"From", " a@none.example"}}, body: strings.Repeat("line of text\n", 20000)})
	if act.Type != milter.ActionAccept || len(mods) != 1 {
		t.Fatalf("%+v %+v", act, mods)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}

// Garbage on the milter socket closes that connection with a log line;
// the daemon keeps serving and the next real session works.
func TestGarbageOnSocket(t *testing.T) {
	addr, logs := startServer(t, nil, nil)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"http", []byte("GET / HTTP/1.0\r\n\r\n")},
		{"empty packet", []byte{0, 0, 0, 0}},
		{"huge length", []byte{0x1f, 0xff, 0xff, 0xff, 'O'}},
		{"bad optneg", []byte{0, 0, 0, 2, 'O', 1}},
		{"unknown command", append([]byte{0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 1, 0xff, 0, 0x1f, 0xff, 0xff}, 0, 0, 0, 1, '!')},
		{"half packet", []byte{0, 0, 0, 100, 'H', 'x'}},
		{"mail without NUL", append(packet('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"), packet('M', "<a@b>")...)},
		{"connect without family", append(packet('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"), packet('C', "host\x00")...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.data) //nolint:errcheck
			if tc.name == "half packet" {
				c.(*net.TCPConn).CloseWrite() //nolint:errcheck
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
			// The server closes the connection (perhaps after an
			// answer to a good first packet) and does not hang.
			if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("server did not close the connection: %v", err)
			}
		})
	}
	// Still serving.
	c := milter.NewClient("tcp", addr, milter.WithReadTimeout(10*time.Second), milter.WithWriteTimeout(10*time.Second))
	_, act := send(t, c, msg{ip: "192.0.2.1", helo: "mail.example.org", from: "alice@example.org",
		headers: [][2]string{{"From", " alice@example.org"}}, body: "x\n"})
	if act.Type != milter.ActionContinue && act.Type != milter.ActionAccept {
		t.Fatalf("after garbage: %+v", act)
	}
	for _, want := range []string{"packet of 0 bytes: not the milter protocol, or broken; connection closed\" remote=127.0.0.1:", "packet of 536870911 bytes", "packet of 1195725856 bytes", "MAIL packet without its NUL terminator", "connect packet without"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %q:\n%s", want, logs)
		}
	}
}

// On shutdown the message in progress is finished and answered, new
// connections are refused, and Serve returns once the session ends.
func TestShutdownFinishesMessage(t *testing.T) {
	s := New(testEngine(t), Config{AuthservID: "mx.test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := listener.Listen(listener.Address{Network: "tcp", Address: "127.0.0.1:0"}, listener.SocketPerms{})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()

	c := milter.NewClient("tcp", addr, milter.WithReadTimeout(10*time.Second), milter.WithWriteTimeout(10*time.Second))
	sess, err := c.Session(milter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { _, err := sess.Conn("h.example", milter.FamilyInet, 40000, "192.0.2.1"); return err },
		func() error { _, err := sess.Helo("h.example"); return err },
		func() error { _, err := sess.Mail("a@good.example", ""); return err },
		func() error { _, err := sess.Rcpt("user@mx.test", ""); return err },
		func() error { _, err := sess.DataStart(); return err },
		func() error { _, err := sess.HeaderField("From", " a@good.example", nil); return err },
		func() error { _, err := sess.HeaderEnd(); return err },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	cancel() // SIGTERM arrives mid-message
	// The listener closes: new connections are refused while the
	// message in progress goes on.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if i > 500 {
			t.Fatal("new connections still accepted during shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := sess.BodyChunk([]byte("body\r\n")); err != nil {
		t.Fatal(err)
	}
	_, act, err := sess.End()
	if err != nil || act.Type != milter.ActionAccept {
		t.Fatalf("message in progress: %+v, %v", act, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) while a session was open", err)
	default:
	}
	sess.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the session ended")
	}
}

// Issue 10.7: our authserv-id in any spelling is removed, inbound and on
// every outbound path (trusted network, logged-in user, outbound smtpd),
// with the quarantine marker; outbound, the deletions come before any
// signature is inserted.
func TestForgedHeadersRemovedEveryPath(t *testing.T) {
	c, _ := start(t, nil, nil)
	forged := [][2]string{
		{"From", " colleague@none.example"},
		{"Authentication-Results", " mx.test.; dkim=pass header.d=bank.example; dmarc=pass"},
		{"Authentication-Results", " mx.test\u00a0; dmarc=pass"},
		{"Authentication-Results", ` mx\.test; dmarc=pass`},
		{"Authentication-Results", " mx.test=; dmarc=pass"},
		{"Authentication-Results", ` "mx.test"; dmarc=pass`},
		{"X-Wehr-Quarantine", " no"},
		{"Authentication-Results", " other.example; dmarc=pass"},
		{"Subject", " salary"},
	}
	want := "X-Wehr-Quarantine#1 Authentication-Results#5 Authentication-Results#4 Authentication-Results#3 Authentication-Results#2 Authentication-Results#1"
	base := msg{helo: "web.local", from: "x@bank.example", headers: forged, body: "x\n"}
	for name, m := range map[string]msg{
		"inbound":         func() msg { m := base; m.ip = "203.0.113.5"; m.from = "x@evil.example"; return m }(),
		"trusted network": func() msg { m := base; m.ip = "127.0.0.1"; return m }(),
		"authenticated": func() msg {
			m := base
			m.ip = "203.0.113.5"
			m.macros = map[milter.MacroName]string{milter.MacroAuthAuthen: "alice"}
			return m
		}(),
		"outbound smtpd": func() msg {
			m := base
			m.ip = "203.0.113.5"
			m.macros = map[milter.MacroName]string{milter.MacroDaemonName: "ORIGINATING"}
			return m
		}(),
	} {
		mods, act := send(t, c, m)
		if act.Type != milter.ActionAccept && act.Type != milter.ActionRejectWithCode {
			t.Fatalf("%s: %+v", name, act)
		}
		var got []string
		for _, md := range mods {
			if md.Type == milter.ActionChangeHeader {
				got = append(got, md.HeaderName+"#"+itoa(int(md.HeaderIndex)))
			}
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s: deleted %v\nwant %s", name, got, want)
		}
	}
}

// fakeReports collects what the milter hands the report recorder.
type fakeReports struct {
	mu   sync.Mutex
	envs []mailauth.Envelope
	acts []string
}

func (f *fakeReports) Record(v *mailauth.Verdict, env mailauth.Envelope) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.envs = append(f.envs, env)
	f.acts = append(f.acts, v.Action)
}

// Every inbound message verified reaches the report recorder, refused
// ones included, with its envelope; outbound mail does not.
func TestReportsRecorded(t *testing.T) {
	rep := &fakeReports{}
	c, _ := start(t, func(c *Config) { c.Reports = rep }, nil)
	_, act := send(t, c, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{{"From", " ceo@bank.example"}}, body: "pay\n"})
	if act.SMTPCode != 550 {
		t.Fatalf("spoof: %+v", act)
	}
	send(t, c, msg{ip: "127.0.0.1", helo: "localhost", from: "a@bank.example", headers: [][2]string{{"From", " a@bank.example"}}, body: "out\n"})
	rep.mu.Lock()
	defer rep.mu.Unlock()
	if len(rep.envs) != 1 || rep.acts[0] != mailauth.ActionReject || rep.envs[0].MailFrom != "x@evil.example" ||
		rep.envs[0].ClientIP.String() != "203.0.113.5" || len(rep.envs[0].RcptTo) == 0 {
		t.Fatalf("recorded %+v %v", rep.envs, rep.acts)
	}
}
