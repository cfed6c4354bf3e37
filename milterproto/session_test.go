package milterproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"
)

// syncBuf is a log sink safe for the server's goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Take returns what was logged and forgets it.
func (s *syncBuf) Take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// recorder is a handler that notes what it is called with, and at the
// end of a message makes the changes and answer its test asks for.
type recorder struct {
	ss     *Session
	mu     *sync.Mutex
	events *[]string
	eom    func(ss *Session) Reply
}

func (r *recorder) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.events = append(*r.events, sprintf(format, args...))
}

func (r *recorder) Connect(host, family string, port uint16, addr string) {
	r.note("connect %s %s %d %s j=%s", host, family, port, addr, r.ss.Macro("j"))
}
func (r *recorder) Helo(name string) { r.note("helo %s", name) }
func (r *recorder) MailFrom(from string) {
	r.note("mail %s auth=%s i=%s", from, r.ss.Macro("{auth_authen}"), r.ss.Macro("{i}"))
}
func (r *recorder) RcptTo(rcpt string)        { r.note("rcpt %s", rcpt) }
func (r *recorder) Header(name, value string) { r.note("header %s:%q", name, value) }
func (r *recorder) EndOfHeaders()             { r.note("eoh") }
func (r *recorder) Body(chunk []byte)         { r.note("body %q", chunk) }
func (r *recorder) Abort()                    { r.note("abort") }
func (r *recorder) Close()                    { r.note("close %d", r.ss.ID()) }
func (r *recorder) EndOfMessage() Reply {
	r.note("eom i=%s", r.ss.Macro("i"))
	if r.eom != nil {
		return r.eom(r.ss)
	}
	return Accept
}

func sprintf(format string, args ...any) string {
	return strings.TrimSpace(fmt.Sprintf(format, args...))
}

// serve starts a server with our options on loopback.
func serve(t testing.TB, opts Options, eom func(*Session) Reply) (addr string, events func() []string, logs *syncBuf, srv *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var evs []string
	logs = &syncBuf{}
	srv = NewServer(opts, slog.New(slog.NewTextHandler(logs, nil)), func(ss *Session) Handler {
		return &recorder{ss: ss, mu: &mu, events: &evs, eom: eom}
	})
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx) //nolint:errcheck
	})
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := append([]string(nil), evs...)
		if len(evs) > 10000 {
			evs = nil // a fuzzer's thousands of sessions: what it checks is each one's
		}
		return out
	}, logs, srv
}

// ours are the options the milter negotiates.
var ours = Options{
	Actions: AddHeaders | ChangeHeaders | Quarantine,
	Protocol: NoUnknown | NoData | NoConnReply | NoHeloReply | NoMailReply | NoRcptReply | NoDataReply | NoHeaderReply |
		NoEOHReply | NoBodyReply | HeaderLeadingSpace,
	Macros: map[Stage][]string{StageConnect: {"{daemon_name}", "j"}, StageMail: {"{auth_authen}", "i"}, StageEOM: {"i"}},
}

// A whole session through go-milter's client (an implementation of the
// MTA's side that is not ours): what the handler sees, the macros of
// each stage, and the changes and answer the client gets.
func TestSessionThroughClient(t *testing.T) {
	addr, events, _, _ := serve(t, ours, func(ss *Session) Reply {
		must(t, ss.ChangeHeader(2, "Authentication-Results", ""))
		must(t, ss.InsertHeader(0, "Authentication-Results", " mx.test; spf=pass\n\tsmtp.mailfrom=a@example.org"))
		must(t, ss.Quarantine("DMARC\nexample.org"))
		r, err := ReplyCode(550, "5.7.1 100% refused")
		must(t, err)
		return r
	})
	c := milter.NewClient("tcp", addr, milter.WithReadTimeout(5*time.Second), milter.WithWriteTimeout(5*time.Second))
	macros := milter.NewMacroBag()
	macros.Set("j", "mx.test")
	macros.Set("{auth_authen}", "alice")
	macros.Set("i", "ABC123")
	s, err := c.Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []func() (*milter.Action, error){
		func() (*milter.Action, error) {
			return s.Conn("mail.example.org", milter.FamilyInet, 4000, "192.0.2.1")
		},
		func() (*milter.Action, error) { return s.Helo("mail.example.org") },
		func() (*milter.Action, error) { return s.Mail("a@example.org", "") },
		func() (*milter.Action, error) { return s.Rcpt("b@mx.test", "") },
		func() (*milter.Action, error) { return s.DataStart() },
		func() (*milter.Action, error) { return s.HeaderField("From", " a@example.org", nil) },
		func() (*milter.Action, error) { return s.HeaderField("Subject", " two\n\tlines", nil) },
		func() (*milter.Action, error) { return s.HeaderEnd() },
	}
	for i, step := range steps {
		if act, err := step(); err != nil || act.Type != milter.ActionContinue {
			t.Fatalf("step %d: %+v %v", i, act, err)
		}
	}
	mods, act, err := s.BodyReadFrom(strings.NewReader("hello\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 550 || act.SMTPReply != "550 5.7.1 100%% refused" {
		t.Errorf("answer %+v", act)
	}
	var got []string
	for _, m := range mods {
		got = append(got, sprintf("%v %d %s %q %s", m.Type, m.HeaderIndex, m.HeaderName, m.HeaderValue, m.Reason))
	}
	want := []string{
		sprintf("%v %d %s %q", milter.ActionChangeHeader, 2, "Authentication-Results", ""),
		sprintf("%v %d %s %q", milter.ActionInsertHeader, 0, "Authentication-Results", " mx.test; spf=pass\n\tsmtp.mailfrom=a@example.org"),
		sprintf("%v %d %s %q", milter.ActionQuarantine, 0, "", "") + " DMARC example.org",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("changes:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s.Close()
	wantEvents := []string{
		"connect mail.example.org tcp4 4000 192.0.2.1 j=mx.test",
		"helo mail.example.org",
		"mail a@example.org auth=alice i=ABC123",
		"rcpt b@mx.test",
		`header From:" a@example.org"`,
		`header Subject:" two\n\tlines"`,
		"eoh",
		`body "hello\r\n"`,
		"eom i=ABC123",
		"close 1",
	}
	waitFor(t, func() bool { return len(events()) >= len(wantEvents) })
	if strings.Join(events(), "\n") != strings.Join(wantEvents, "\n") {
		t.Errorf("events:\n%s\nwant\n%s", strings.Join(events(), "\n"), strings.Join(wantEvents, "\n"))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Error(err)
	}
}

func waitFor(t testing.TB, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("timed out")
}

// pkt frames one packet.
func pkt(cmd byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, cmd), data...)
}

// optneg is the MTA's negotiation packet: version, actions, protocol.
func optneg(version, actions, protocol uint32) []byte {
	var d []byte
	d = binary.BigEndian.AppendUint32(d, version)
	d = binary.BigEndian.AppendUint32(d, actions)
	d = binary.BigEndian.AppendUint32(d, protocol)
	return pkt('O', string(d))
}

// postfix is what Postfix 3 offers: every action, every protocol bit.
var postfix = optneg(6, 0x1ff, 0x1fffff)

// readPackets reads packets until the connection closes or times out.
func readPackets(t testing.TB, c net.Conn) (cmds string, datas []string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
	all, _ := io.ReadAll(c)
	for len(all) >= 5 {
		l := int(binary.BigEndian.Uint32(all))
		if len(all) < 4+l {
			break
		}
		cmds += string(all[4])
		datas = append(datas, string(all[5:4+l]))
		all = all[4+l:]
	}
	return cmds, datas
}

// The negotiation's answer: the MTA's version if lower, our actions and
// protocol (what it offers of it), the macro lists only if it takes them;
// and a reply it does not offer to leave out is sent.
func TestNegotiation(t *testing.T) {
	addr, _, logs, _ := serve(t, ours, nil)
	for _, tc := range []struct {
		name  string
		in    []byte
		cmds  string
		check func(t *testing.T, datas []string)
		log   string
	}{
		{name: "postfix", in: append(append([]byte(nil), postfix...), pkt('Q', "")...), cmds: "O",
			check: func(t *testing.T, d []string) {
				if binary.BigEndian.Uint32([]byte(d[0])) != 6 || Action(binary.BigEndian.Uint32([]byte(d[0][4:]))) != ours.Actions ||
					Protocol(binary.BigEndian.Uint32([]byte(d[0][8:]))) != ours.Protocol {
					t.Errorf("negotiated %x", d[0])
				}
				if !strings.Contains(d[0][12:], "{daemon_name} j\x00") || !strings.Contains(d[0][12:], "{auth_authen} i\x00") {
					t.Errorf("macro lists %q", d[0][12:])
				}
			}},
		{name: "no macro lists", in: append(optneg(6, 0x0ff, 0x1fffff), pkt('Q', "")...), cmds: "O",
			check: func(t *testing.T, d []string) {
				if len(d[0]) != 12 {
					t.Errorf("macro lists sent to an MTA that takes none: %q", d[0][12:])
				}
			}},
		{name: "replies not left out", in: bytes.Join([][]byte{optneg(2, 0x3f, 0x100000), pkt('C', "h\x004\x00\x19192.0.2.1\x00"),
			pkt('H', "h\x00"), pkt('M', "<a@b>\x00"), pkt('L', "From\x00 a@b\x00"), pkt('N', ""), pkt('B', "x"), pkt('E', ""), pkt('Q', "")}, nil),
			cmds: "Occcccca",
			check: func(t *testing.T, d []string) {
				if binary.BigEndian.Uint32([]byte(d[0])) != 2 {
					t.Errorf("version %x", d[0][:4])
				}
			}},
		{name: "quarantine not offered", in: optneg(6, 0x1f, 0x1fffff), cmds: "", log: "the MTA does not offer the actions 0x20 we need"},
		{name: "no leading space", in: optneg(6, 0x1ff, 0x0fffff), cmds: "", log: "protocol options 0x100000"},
		{name: "version 1", in: optneg(1, 0x1ff, 0x1fffff), cmds: "", log: "milter protocol version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.in) //nolint:errcheck
			cmds, datas := readPackets(t, c)
			if cmds != tc.cmds {
				t.Fatalf("replies %q, want %q", cmds, tc.cmds)
			}
			if tc.check != nil {
				tc.check(t, datas)
			}
			if tc.log != "" {
				waitFor(t, func() bool { return strings.Contains(logs.String(), tc.log) })
			}
		})
	}
}

// Hostile packets end their connection with a log line and never reach
// the handler half parsed; the server goes on serving.
func TestHostilePackets(t *testing.T) {
	addr, events, logs, _ := serve(t, ours, nil)
	for _, tc := range []struct {
		name string
		in   []byte
		log  string
	}{
		{"empty packet", []byte{0, 0, 0, 0}, "a packet of 0 bytes"},
		{"length past the bound", []byte{0x01, 0, 0, 1, 'O'}, "a packet of 16777217 bytes"},
		{"not negotiation first", pkt('C', "h\x004\x00\x19192.0.2.1\x00"), "the first packet is 'C'"},
		{"short negotiation", pkt('O', "\x00\x00\x00\x06"), "with 4 bytes"},
		{"second negotiation", append(append([]byte(nil), postfix...), postfix...), "a second option negotiation"},
		{"unknown command", append(append([]byte(nil), postfix...), pkt('!', "")...), "unknown command '!'"},
		{"macro without command", append(append([]byte(nil), postfix...), pkt('D', "")...), "macro packet without its command"},
		{"connect without family", append(append([]byte(nil), postfix...), pkt('C', "host\x00")...), "without host name terminator and family"},
		{"connect family", append(append([]byte(nil), postfix...), pkt('C', "host\x00X\x00\x19a\x00")...), "with family 'X'"},
		{"connect without address", append(append([]byte(nil), postfix...), pkt('C', "host\x004\x00")...), "without port and address"},
		// The handler takes a connection without a parsable address
		// for a local one, which it does not verify.
		{"connect bad IPv4", append(append([]byte(nil), postfix...), pkt('C', "host\x004\x00\x19not-an-ip\x00")...), `IPv4 address \"not-an-ip\"`},
		{"connect IPv6 as IPv4", append(append([]byte(nil), postfix...), pkt('C', "host\x004\x00\x19::1\x00")...), `IPv4 address \"::1\"`},
		{"connect bad IPv6", append(append([]byte(nil), postfix...), pkt('C', "host\x006\x00\x19IPv6:zz\x00")...), `IPv6 address \"IPv6:zz\"`},
		{"mail without NUL", append(append([]byte(nil), postfix...), pkt('M', "<a@b>")...), "MAIL packet without its NUL terminator"},
		{"rcpt without NUL", append(append([]byte(nil), postfix...), pkt('R', "<a@b>")...), "RCPT packet without its NUL terminator"},
		{"header without value", append(append([]byte(nil), postfix...), pkt('L', "From\x00 a@b")...), "header packet without a name and two NUL terminators"},
		{"header with three strings", append(append([]byte(nil), postfix...), pkt('L', "X-Nul\x00 a\x00b\x00")...), "unexpected number of strings"},
		{"header without name", append(append([]byte(nil), postfix...), pkt('L', "\x00 a@b\x00")...), "header packet without a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(events())
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.in)                                     //nolint:errcheck
			c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
			if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("not closed: %v", err)
			}
			waitFor(t, func() bool { return strings.Contains(logs.String(), tc.log) })
			if !strings.Contains(logs.String(), "not the milter protocol, or broken; connection closed") {
				t.Errorf("log: %s", logs)
			}
			for _, e := range events()[before:] {
				if !strings.HasPrefix(e, "close ") {
					t.Errorf("the handler saw %q", e)
				}
			}
		})
	}
	// A packet that claims 16 MiB and sends little: the connection
	// ends when the MTA does, and nothing was allocated for the claim.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(append(append([]byte(nil), postfix...), 0, 0xff, 0xff, 0xff, 'B', 'x')) //nolint:errcheck
	c.(*net.TCPConn).CloseWrite()                                                   //nolint:errcheck
	readPackets(t, c)
	c.Close()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "closed the connection within a packet") })
}

// A handler's panic ends its connection with a log line and the stack;
// the server goes on.
func TestHandlerPanic(t *testing.T) {
	addr, _, logs, _ := serve(t, ours, func(*Session) Reply { panic("boom") })
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(bytes.Join([][]byte{postfix, pkt('M', "<a@b>\x00"), pkt('E', "")}, nil)) //nolint:errcheck
		if cmds, _ := readPackets(t, c); cmds != "O" {
			t.Errorf("replies %q", cmds)
		}
		c.Close()
	}
	waitFor(t, func() bool { return strings.Count(logs.String(), "milter: panic; connection closed") == 2 })
	if !strings.Contains(logs.String(), "panic=boom") || !strings.Contains(logs.String(), "goroutine") {
		t.Errorf("log: %s", logs)
	}
}

// A message that is not ended is aborted for the handler: a new MAIL
// without an abort, 'K' (a new connection on the socket, a new handler
// and number), the socket closed.
func TestAbortsAndNewConnection(t *testing.T) {
	addr, events, _, _ := serve(t, ours, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(bytes.Join([][]byte{postfix, pkt('M', "<a@b>\x00"), pkt('M', "<c@d>\x00"), pkt('A', ""), pkt('A', ""),
		pkt('M', "<e@f>\x00"), pkt('K', ""), pkt('M', "<g@h>\x00")}, nil)) //nolint:errcheck
	c.(*net.TCPConn).CloseWrite() //nolint:errcheck
	readPackets(t, c)
	c.Close()
	want := []string{"mail a@b auth= i=", "abort", "mail c@d auth= i=", "abort", "mail e@f auth= i=", "abort", "close 1",
		"mail g@h auth= i=", "abort", "close 2"}
	waitFor(t, func() bool { return len(events()) >= len(want) })
	if strings.Join(events(), "|") != strings.Join(want, "|") {
		t.Errorf("events %q\nwant %q", events(), want)
	}
}

// Macros last as long as their stage: the message's go with it, the
// connection's stay; a macro sent for a header lasts that header.
func TestMacroLifetimes(t *testing.T) {
	ss := &Session{}
	set := func(cmd byte, kv string) { ss.setMacros(cmd, []byte(kv)) }
	set('C', "j\x00mx.test\x00{daemon_name}\x00ORIGINATING\x00")
	set('M', "{auth_authen}\x00alice\x00i\x00Q1\x00")
	set('E', "i\x00Q2\x00")
	for _, tc := range []struct{ name, want string }{{"j", "mx.test"}, {"{j}", "mx.test"}, {"daemon_name", "ORIGINATING"},
		{"{i}", "Q2"}, {"auth_authen", "alice"}, {"none", ""}} {
		if got := ss.Macro(tc.name); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, got, tc.want)
		}
	}
	ss.clearFrom(slotMail) // the end of the message
	if ss.Macro("i") != "" || ss.Macro("auth_authen") != "" || ss.Macro("j") != "mx.test" {
		t.Errorf("after the message: i=%q auth=%q j=%q", ss.Macro("i"), ss.Macro("auth_authen"), ss.Macro("j"))
	}
	// A connect's macros replace the last connection's.
	set('C', "j\x00other\x00")
	if ss.Macro("daemon_name") != "" || ss.Macro("j") != "other" {
		t.Error("stale connect macros")
	}
}

// A header value goes out with LF line breaks; a line break never
// starts a field of its own, whatever the value holds.
func TestAppendValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{" plain", " plain"},
		{" a;\n\tb", " a;\n\tb"},
		{" a;\r\n\tb", " a;\n\tb"},
		{" a\r\n b", " a\n b"},
		{" nul\x00here", " nul here"},
		{" x\nX-Evil: 1", " x\n\tX-Evil: 1"},
		{" x\rX-Evil: 1", " x\n\tX-Evil: 1"},
		{" x\r\nX-Evil: 1", " x\n\tX-Evil: 1"},
		{" trailing\r\n", " trailing"},
		{" x\n\nY: 1", " x\n\t\n\tY: 1"},
	} {
		if got := string(appendValue(nil, tc.in)); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestReplyCode(t *testing.T) {
	for _, tc := range []struct {
		code int
		text string
		want string
		err  bool
	}{
		{550, "5.7.1 Refused", "550 5.7.1 Refused", false},
		{451, "4.3.0 50% done", "451 4.3.0 50%% done", false},
		{550, "5.7.1 a\x00b", "550 5.7.1 a b", false},
		{550, "5.7.1 two\r\nlines", "", true},
		{250, "2.0.0 ok", "", true},
		{550, "5.7.1 " + strings.Repeat("é", 400), "550 5.7.1 " + strings.Repeat("é", 222), false},
	} {
		r, err := ReplyCode(tc.code, tc.text)
		if (err != nil) != tc.err || (!tc.err && r.String() != tc.want) {
			t.Errorf("%d %q: %q %v", tc.code, tc.text, r.String(), err)
		}
	}
}

// Changes only at the end of a message, and only those negotiated.
func TestChangesGuarded(t *testing.T) {
	ss := &Session{bufs: &sessionBufs{}, actions: AddHeaders}
	if err := ss.InsertHeader(0, "X", " y"); !errors.Is(err, ErrNotNow) {
		t.Errorf("before the end: %v", err)
	}
	ss.inEOM = true
	if err := ss.ChangeHeader(1, "X", ""); !errors.Is(err, ErrNotNegotiated) {
		t.Errorf("not negotiated: %v", err)
	}
	if err := ss.Quarantine("x"); !errors.Is(err, ErrNotNegotiated) {
		t.Errorf("not negotiated: %v", err)
	}
	for _, name := range []string{"", "Bad Name", "Bad:Name", "Bad\nName"} {
		if err := ss.InsertHeader(0, name, " y"); err == nil {
			t.Errorf("name %q taken", name)
		}
	}
	if err := ss.InsertHeader(0, "X", " "+strings.Repeat("y", maxChange)); err == nil || len(ss.bufs.out) != 0 {
		t.Errorf("an oversized change: %v, %d bytes left", err, len(ss.bufs.out))
	}
	if err := ss.InsertHeader(-1, "X", " y"); err == nil {
		t.Error("negative index taken")
	}
}

// The idle timeout ends a connection that stops sending, mid-message.
func TestIdleTimeout(t *testing.T) {
	opts := ours
	opts.IdleTimeout = 200 * time.Millisecond
	addr, _, logs, _ := serve(t, opts, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(bytes.Join([][]byte{postfix, pkt('M', "<a@b>\x00")}, nil)) //nolint:errcheck
	start := time.Now()
	readPackets(t, c)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed after %v", d)
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "sent nothing within the timeout") })
}

// KeepAlive sends progress while the handler works, and stops at its
// limit; the answer follows.
func TestKeepAlive(t *testing.T) {
	addr, _, _, _ := serve(t, ours, func(ss *Session) Reply {
		stop := ss.KeepAlive(50*time.Millisecond, 450*time.Millisecond)
		time.Sleep(800 * time.Millisecond)
		stop()
		return Accept
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(bytes.Join([][]byte{postfix, pkt('M', "<a@b>\x00"), pkt('E', "")}, nil)) //nolint:errcheck
	c.SetReadDeadline(time.Now().Add(3 * time.Second))                               //nolint:errcheck
	var got []byte
	buf := make([]byte, 256)
	for !bytes.HasSuffix(got, []byte{0, 0, 0, 1, 'a'}) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("%v after %q", err, got)
		}
		got = append(got, buf[:n]...)
	}
	p := bytes.Count(got, []byte{0, 0, 0, 1, 'p'})
	if p < 2 || p > 6 {
		t.Errorf("%d progress packets in 450 ms, looked for every 100 ms", p)
	}
}

// Shutdown lets a session end as the MTA ends it, then closes the rest
// when its context is done; no new connection is served.
func TestShutdown(t *testing.T) {
	addr, _, _, srv := serve(t, ours, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(postfix)                                   //nolint:errcheck
	c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
	if _, err := io.ReadFull(c, make([]byte, 4+13)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown with a session open: %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("the open session was not waited for: %v", d)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("the session was not closed: %v", err)
	}
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c2.Close()
		t.Error("still accepting")
	}
}
