package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/internal/loadstat"
	"github.com/wehr/wehr/resolver/dnstest"
)

// The hostile input catalogue (issue 19): each case sends `wehr serve`
// (the real binary, with its own test DNS) something a sender or a local
// user controls, checks that the answer is a clear verdict or error, and
// then that the daemon still serves a sound message and a sound policy
// request. Senders' DNS is hostile too: huge and looping SPF records,
// CNAME loops, oversized TXT over TCP, SERVFAIL, late answers.

const hostileZone = `
hostile.test.              300 IN SOA ns.hostile.test. h.hostile.test. 1 3600 600 86400 300
good.hostile.test.         300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
_dmarc.good.hostile.test.  300 IN TXT "v=DMARC1; p=reject"
loop-a.hostile.test.       300 IN TXT "v=spf1 include:loop-b.hostile.test -all"
loop-b.hostile.test.       300 IN TXT "v=spf1 include:loop-a.hostile.test -all"
_dmarc.loop-a.hostile.test. 300 IN TXT "v=DMARC1; p=reject"
many.hostile.test.         300 IN TXT "v=spf1 include:i1.hostile.test include:i2.hostile.test include:i3.hostile.test include:i4.hostile.test include:i5.hostile.test include:i6.hostile.test include:i7.hostile.test include:i8.hostile.test include:i9.hostile.test include:i10.hostile.test include:i11.hostile.test include:i12.hostile.test -all"
_dmarc.many.hostile.test.  300 IN TXT "v=DMARC1; p=reject"
sel._domainkey.cname.hostile.test. 300 IN CNAME sel._domainkey.cname.hostile.test.
_dmarc.cname.hostile.test. 300 IN TXT "v=DMARC1; p=reject"
_dmarc.garbage.hostile.test. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:; pct=999999999999; \000\001 junk=;;;;"
_dmarc.slow.hostile.test.  300 IN TXT "v=DMARC1; p=reject"
`

type hostileEnv struct {
	t                     *testing.T
	wh                    *Wehr
	dns                   *dnstest.Server
	milterAddr, policyAdr string
}

// hmsg is one message as Postfix hands it to the milter.
type hmsg struct {
	from    string
	headers [][2]string // name, value with Postfix's leading space
	chunks  func(yield func([]byte) bool)
}

func body(s string) func(func([]byte) bool) {
	return func(yield func([]byte) bool) { yield([]byte(strings.ReplaceAll(s, "\n", "\r\n"))) }
}

// outcome is what the milter said: the first action that was not
// "continue" (or the end-of-message one) and the modifications.
type outcome struct {
	act  *milter.Action
	mods []milter.ModifyAction
}

func (o outcome) code() int {
	if o.act == nil {
		return 0
	}
	switch o.act.Type {
	case milter.ActionAccept, milter.ActionContinue:
		return 250
	case milter.ActionTempFail:
		return 451
	case milter.ActionReject:
		return 550
	}
	return int(o.act.SMTPCode)
}

func (o outcome) header(name string) string {
	for _, m := range o.mods {
		if (m.Type == milter.ActionInsertHeader || m.Type == milter.ActionAddHeader) && strings.EqualFold(m.HeaderName, name) {
			return m.HeaderValue
		}
	}
	return ""
}

// deleted counts the header fields of name the milter removed.
func (o outcome) deleted(name string) int {
	n := 0
	for _, m := range o.mods {
		if m.Type == milter.ActionChangeHeader && strings.EqualFold(m.HeaderName, name) && m.HeaderValue == "" {
			n++
		}
	}
	return n
}

func (e *hostileEnv) send(m hmsg) (outcome, error) {
	c := milter.NewClient("tcp", e.milterAddr, milter.WithReadTimeout(30*time.Second), milter.WithWriteTimeout(30*time.Second))
	s, err := c.Session(milter.NewMacroBag())
	if err != nil {
		return outcome{}, err
	}
	defer s.Close()
	stop := func(a *milter.Action, err error) (bool, outcome, error) {
		if err != nil {
			return true, outcome{}, err
		}
		if a.Type != milter.ActionContinue {
			return true, outcome{act: a}, nil
		}
		return false, outcome{}, nil
	}
	steps := []func() (*milter.Action, error){
		func() (*milter.Action, error) {
			return s.Conn("mta.sender.example", milter.FamilyInet, 40000, "203.0.113.9")
		},
		func() (*milter.Action, error) { return s.Helo("mta.sender.example") },
		func() (*milter.Action, error) { return s.Mail(m.from, "") },
		func() (*milter.Action, error) { return s.Rcpt("<alice@example.test>", "") },
		func() (*milter.Action, error) { return s.DataStart() },
	}
	for _, h := range m.headers {
		steps = append(steps, func() (*milter.Action, error) { return s.HeaderField(h[0], h[1], nil) })
	}
	steps = append(steps, func() (*milter.Action, error) { return s.HeaderEnd() })
	for _, step := range steps {
		if done, o, err := stop(step()); done {
			return o, err
		}
	}
	var berr error
	var out outcome
	m.chunks(func(b []byte) bool {
		for len(b) > 0 {
			n := min(len(b), 65535)
			a, err := s.BodyChunk(b[:n])
			if err != nil {
				berr = err
				return false
			}
			if a.Type != milter.ActionContinue {
				out.act = a
				return false
			}
			b = b[n:]
		}
		return true
	})
	if berr != nil || out.act != nil {
		return out, berr
	}
	mods, act, err := s.End()
	return outcome{act: act, mods: mods}, err
}

// sound is a message the daemon must always give a verdict.
func sound(subject string) hmsg {
	return hmsg{from: "<a@good.hostile.test>", headers: [][2]string{{"From", " a@good.hostile.test"}, {"To", " alice@example.test"},
		{"Subject", " " + subject}, {"Message-ID", " <" + subject + "@good.hostile.test>"}}, chunks: body("hello\n")}
}

func (e *hostileEnv) policy(req string) (string, error) {
	c, err := net.DialTimeout("tcp", e.policyAdr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second)) //nolint:errcheck
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

const soundPolicy = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=203.0.113.9\nhelo_name=mta.sender.example\n" +
	"sender=a@good.hostile.test\nrecipient=alice@example.test\ninstance=h.1\n\n"

// healthy checks the daemon still serves both sockets.
func (e *hostileEnv) healthy(t *testing.T, after string) {
	t.Helper()
	select {
	case <-e.wh.done:
		t.Fatalf("wehr stopped after %s:\n%s", after, Tail(e.wh.Log, 30))
	default:
	}
	o, err := e.send(sound("after-" + strings.ReplaceAll(after, " ", "-")))
	if err != nil || o.code() != 250 || !strings.Contains(o.header("Authentication-Results"), "dmarc=pass") {
		t.Fatalf("after %s: a sound message got %+v %v (A-R %q)\n%s", after, o.act, err, o.header("Authentication-Results"), Tail(e.wh.Log, 20))
	}
	if a, err := e.policy(soundPolicy); err != nil || !strings.HasPrefix(a, "action=") {
		t.Fatalf("after %s: a sound policy request got %q %v\n%s", after, a, err, Tail(e.wh.Log, 20))
	}
}

func TestHostileCatalogue(t *testing.T) {
	dir := filepath.Join(w.dir, "hostile")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dns := dnstest.New(t, hostileZone)
	// Oversized records: a 3 KB SPF record and a 30 KB DKIM key record
	// (beyond UDP: over TCP).
	var ip4 []string
	for i := range 180 {
		ip4 = append(ip4, fmt.Sprintf("ip4:198.18.%d.%d", i/250, i%250))
	}
	dns.AddTXT("huge.hostile.test.", "v=spf1 "+strings.Join(ip4, " ")+" ip4:203.0.113.0/24 -all")
	dns.AddTXT("_dmarc.huge.hostile.test.", "v=DMARC1; p=reject")
	dns.AddTXT("sel._domainkey.big.hostile.test.", "v=DKIM1; k=rsa; p="+strings.Repeat("A", 30000))
	dns.AddTXT("_dmarc.big.hostile.test.", "v=DMARC1; p=reject")
	dns.ServFail("servfail.hostile.test.")
	dns.ServFail("_dmarc.servfail.hostile.test.")
	dns.Delay("slow.hostile.test.", 5*time.Second)
	for i := 1; i <= 12; i++ {
		dns.AddTXT(fmt.Sprintf("i%d.hostile.test.", i), "v=spf1 a -all")
	}
	ports, err := FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`authserv_id: mx.hostile.test
hostname: mx.hostile.test
dns: {timeout: 1s, attempts: 1}
log: {level: info}
milter:
  listen: inet:127.0.0.1:%d
  max_connections: 100
store:
  backend: embedded
  path: %s
  admin_socket: %s
policyd:
  listen: inet:127.0.0.1:%d
  local_domains: [example.test]
  max_connections: 100
  skip_networks: []
`, ports[0], filepath.Join(dir, "wehr.db"), filepath.Join(dir, "admin.sock"), ports[1])
	wh, err := StartWehr(filepath.Join(w.dir, "wehr"), dir, cfg, dns.Addr(), ports[0])
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()
	if err := WaitListening(ports[1], 10*time.Second); err != nil {
		t.Fatal(err)
	}
	e := &hostileEnv{t: t, wh: wh, dns: dns, milterAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), policyAdr: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	e.healthy(t, "start")

	hdr := func(extra ...[2]string) [][2]string {
		return append([][2]string{{"From", " a@good.hostile.test"}, {"To", " alice@example.test"}, {"Subject", " hostile"}}, extra...)
	}
	from := func(domain string) hmsg {
		return hmsg{from: "<a@" + domain + ">", headers: [][2]string{{"From", " a@" + domain}, {"To", " alice@example.test"}, {"Subject", " x"}},
			chunks: body("x\n")}
	}
	// verdict: a definite answer (accept, quarantine in a header, or a
	// refusal with its code) and, when accepted, our A-R.
	verdict := func(t *testing.T, o outcome, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("no answer: %v\n%s", err, Tail(wh.Log, 10))
		}
		switch c := o.code(); {
		case c == 250:
			if !strings.HasPrefix(strings.TrimSpace(o.header("Authentication-Results")), "mx.hostile.test") {
				t.Fatalf("accepted without our A-R: %+v", o.mods)
			}
		case c >= 400 && c < 600:
			if o.act.Type == milter.ActionRejectWithCode && !strings.Contains(o.act.SMTPReply, ".") {
				t.Fatalf("refusal without an enhanced code: %q", o.act.SMTPReply)
			}
		default:
			t.Fatalf("unclear answer %+v", o.act)
		}
	}
	noPass := func(t *testing.T, o outcome, err error, what string) {
		t.Helper()
		verdict(t, o, err)
		if o.code() == 250 && strings.Contains(o.header("Authentication-Results"), what+"=pass") {
			t.Fatalf("a hostile %s passed: %s", what, o.header("Authentication-Results"))
		}
	}
	// notAccepted: refused, or accepted only into quarantine.
	notAccepted := func(t *testing.T, o outcome, err error) {
		t.Helper()
		verdict(t, o, err)
		if o.code() == 250 && o.header("X-Wehr-Quarantine") == "" {
			t.Fatalf("a forgery accepted: %s", o.header("Authentication-Results"))
		}
	}
	refused := func(t *testing.T, o outcome, err error, code int, text string) {
		t.Helper()
		if err != nil || o.code() != code || !strings.Contains(o.act.SMTPReply, text) {
			t.Fatalf("want %d %q, got %+v %v", code, text, o.act, err)
		}
	}
	// arRemoved sends a message with the given A-R fields and wants
	// want of them removed.
	arRemoved := func(t *testing.T, want int, ars ...[2]string) {
		t.Helper()
		o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr(ars...), chunks: body("x\n")})
		verdict(t, o, err)
		if got := o.deleted("Authentication-Results"); got != want {
			t.Fatalf("%d A-R fields removed, want %d: %+v", got, want, o.mods)
		}
	}
	// milterClosesOn writes raw bytes to the milter socket and wants the
	// connection closed.
	milterClosesOn := func(t *testing.T, raw string) {
		t.Helper()
		c, err := net.Dial("tcp", e.milterAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, raw)                             //nolint:errcheck
		c.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("not closed: %v", err)
		}
	}
	rss := func() int64 {
		u, err := loadstat.ReadUsage(wh.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return u.RSS
	}

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"1000 DKIM signatures", func(t *testing.T) {
			var h [][2]string
			for i := range 1000 {
				h = append(h, [2]string{"DKIM-Signature", fmt.Sprintf(" v=1; a=rsa-sha256; d=good.hostile.test; s=s%d; h=from; bh=AAAA; b=AAAA", i)})
			}
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr(h...), chunks: body("x\n")})
			verdict(t, o, err)
			if ar := o.header("Authentication-Results"); o.code() == 250 && strings.Count(ar, "dkim=") > 60 {
				t.Fatalf("every signature checked: %d results", strings.Count(ar, "dkim="))
			}
		}},
		{"10 MB header section", func(t *testing.T) {
			var h [][2]string
			for i := range 10000 {
				h = append(h, [2]string{"X-Filler", fmt.Sprintf(" %d %s", i, strings.Repeat("f", 1000))})
			}
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr(h...), chunks: body("x\n")})
			refused(t, o, err, 552, "5.3.4")
		}},
		{"1 MB header line", func(t *testing.T) {
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr([2]string{"Subject", " " + strings.Repeat("s", 1<<20)}), chunks: body("x\n")})
			refused(t, o, err, 552, "5.3.4")
		}},
		{"deep MIME nesting", func(t *testing.T) {
			var b strings.Builder
			for i := range 5000 {
				fmt.Fprintf(&b, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i, i+1)
			}
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr([2]string{"Content-Type", " multipart/mixed; boundary=b0"}), chunks: body(b.String())})
			verdict(t, o, err)
		}},
		{"NUL bytes in the body", func(t *testing.T) {
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr(), chunks: body("a\x00b\x00\n")})
			verdict(t, o, err)
		}},
		{"NUL byte in a header field (not from Postfix: its strings end at NUL)", func(t *testing.T) {
			_, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr([2]string{"X-Nul", " a\x00b"}), chunks: body("x\n")})
			if err == nil {
				t.Fatal("a header packet of three strings was taken")
			}
			if !strings.Contains(readFile(wh.Log), "unexpected number of strings") {
				t.Fatal("not logged")
			}
		}},
		{"bare CR and LF", func(t *testing.T) {
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr([2]string{"X-Cr", " a\rb"}),
				chunks: func(y func([]byte) bool) { y([]byte("line\rwith bare CR\nand bare LF\r\n.\r\n")) }})
			verdict(t, o, err)
		}},
		{"forged A-R with our id", func(t *testing.T) {
			arRemoved(t, 1, [2]string{"Authentication-Results", " mx.hostile.test; dmarc=pass"})
		}},
		{"forged A-R in odd case, comment and spacing", func(t *testing.T) {
			arRemoved(t, 1, [2]string{"AUTHENTICATION-results", " (trust me)  MX.Hostile.TEST ;spf=pass"})
		}},
		{"forged A-R folded, version, twice", func(t *testing.T) {
			arRemoved(t, 2, [2]string{"Authentication-Results", " mx.hostile.test 1;\r\n\tdkim=pass header.d=bank.example"},
				[2]string{"Authentication-Results", " mx.hostile.test;\r\n dmarc=pass"})
		}},
		{"another host's A-R kept", func(t *testing.T) {
			arRemoved(t, 0, [2]string{"Authentication-Results", " other.example; dkim=pass"})
		}},
		{"50 MB body in bounded memory", func(t *testing.T) {
			before := rss()
			chunk := []byte(strings.Repeat(strings.Repeat("b", 998)+"\r\n", 64))
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: hdr(), chunks: func(y func([]byte) bool) {
				for range 50 << 20 / len(chunk) {
					if !y(chunk) {
						return
					}
				}
			}})
			verdict(t, o, err)
			if grew := rss() - before; grew > 40<<20 {
				t.Fatalf("RSS grew %d MB for a 50 MB body", grew>>20)
			}
		}},
		{"no From", func(t *testing.T) {
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: [][2]string{{"To", " alice@example.test"}}, chunks: body("x\n")})
			noPass(t, o, err, "dmarc")
		}},
		// A forger adds a second author whose domain he passes for,
		// hoping the p=reject domain's failure goes unseen.
		{"two From fields, one of a p=reject domain", func(t *testing.T) {
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: [][2]string{{"From", " a@good.hostile.test"}, {"From", " ceo@cname.hostile.test"}}, chunks: body("x\n")})
			notAccepted(t, o, err)
		}},
		{"From with 500 addresses, one of a p=reject domain", func(t *testing.T) {
			o, err := e.send(hmsg{from: "<a@good.hostile.test>", headers: [][2]string{{"From", " a@good.hostile.test, " + strings.Repeat("x@good.hostile.test, ", 500) + "ceo@cname.hostile.test"}}, chunks: body("x\n")})
			notAccepted(t, o, err)
		}},
		{"garbage on the milter socket", func(t *testing.T) {
			milterClosesOn(t, "\x00\x00\x00\x05Cjunk\x00\x00\x00\x00\x00\x00garbage")
		}},
		{"a packet claiming 2 GB", func(t *testing.T) {
			before := rss()
			milterClosesOn(t, "\x7f\xff\xff\xffO")
			if rss()-before > 16<<20 {
				t.Fatal("memory allocated for the claimed length")
			}
		}},
		{"SPF record of 3 KB (TCP)", func(t *testing.T) {
			o, err := e.send(from("huge.hostile.test"))
			verdict(t, o, err)
		}},
		{"SPF include loop", func(t *testing.T) {
			o, err := e.send(from("loop-a.hostile.test"))
			noPass(t, o, err, "spf")
			noPass(t, o, err, "dmarc")
		}},
		{"SPF past 10 lookups", func(t *testing.T) {
			o, err := e.send(from("many.hostile.test"))
			noPass(t, o, err, "spf")
		}},
		{"DKIM key name in a CNAME loop", func(t *testing.T) {
			m := from("cname.hostile.test")
			m.headers = append(m.headers, [2]string{"DKIM-Signature", " v=1; a=rsa-sha256; d=cname.hostile.test; s=sel; h=from; bh=AAAA; b=AAAA"})
			o, err := e.send(m)
			noPass(t, o, err, "dkim")
		}},
		{"DKIM key record of 30 KB (TCP)", func(t *testing.T) {
			m := from("big.hostile.test")
			m.headers = append(m.headers, [2]string{"DKIM-Signature", " v=1; a=rsa-sha256; d=big.hostile.test; s=sel; h=from; bh=AAAA; b=AAAA"})
			o, err := e.send(m)
			noPass(t, o, err, "dkim")
		}},
		{"DMARC record of garbage", func(t *testing.T) {
			o, err := e.send(from("garbage.hostile.test"))
			noPass(t, o, err, "dmarc")
		}},
		{"SERVFAIL for the sender's domain: never a 5xx", func(t *testing.T) {
			o, err := e.send(from("servfail.hostile.test"))
			verdict(t, o, err)
			if c := o.code(); c >= 500 {
				t.Fatalf("a DNS failure became %d %s", c, o.act.SMTPReply)
			}
		}},
		{"DNS answers 5 s late: never a 5xx", func(t *testing.T) {
			o, err := e.send(from("slow.hostile.test"))
			verdict(t, o, err)
			if c := o.code(); c >= 500 {
				t.Fatalf("a late answer became %d %s", c, o.act.SMTPReply)
			}
		}},
		{"policy request of 10,000 attributes", func(t *testing.T) {
			var b strings.Builder
			b.WriteString("request=smtpd_access_policy\n")
			for i := range 10000 {
				fmt.Fprintf(&b, "a%d=%d\n", i, i)
			}
			b.WriteString("\n")
			if a, err := e.policy(b.String()); a != "" || err == nil {
				t.Fatalf("answered: %q", a)
			}
			if !strings.Contains(readFile(wh.Log), "more than 128 attributes") {
				t.Fatal("not logged")
			}
		}},
		{"policy value of 1 MB", func(t *testing.T) {
			if a, err := e.policy("request=smtpd_access_policy\nsender=" + strings.Repeat("s", 1<<20) + "\n\n"); a != "" || err == nil {
				t.Fatalf("answered: %q", a)
			}
			if !strings.Contains(readFile(wh.Log), "line longer than") {
				t.Fatal("not logged")
			}
		}},
		{"policy request without client address", func(t *testing.T) {
			if a, err := e.policy("request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=alice@example.test\n\n"); a != "action=DUNNO" {
				t.Fatalf("%q %v", a, err)
			}
		}},
		{"policy client address of garbage", func(t *testing.T) {
			if a, err := e.policy("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=999.1.2.3\nrecipient=alice@example.test\n\n"); a != "action=DUNNO" {
				t.Fatalf("%q %v", a, err)
			}
		}},
		{"binary garbage on the policy socket", func(t *testing.T) {
			if a, err := e.policy("\x00\xff\xfe garbage\n\n"); a != "" || err == nil {
				t.Fatalf("answered: %q", a)
			}
		}},
		{"policy request in CRLF lines", func(t *testing.T) {
			if a, err := e.policy(strings.ReplaceAll(soundPolicy, "\n", "\r\n")); !strings.HasPrefix(a, "action=") {
				t.Fatalf("%q %v", a, err)
			}
		}},
		{"1000 idle connections on each socket", func(t *testing.T) {
			for _, addr := range []string{e.milterAddr, e.policyAdr} {
				var conns []net.Conn
				for range 1000 {
					c, err := net.DialTimeout("tcp", addr, time.Second)
					if err != nil {
						break
					}
					conns = append(conns, c)
				}
				if len(conns) < 500 {
					t.Fatalf("only %d connections opened", len(conns))
				}
				time.Sleep(1500 * time.Millisecond) // past the eviction threshold
				start := time.Now()
				e.healthy(t, "idle connections on "+addr)
				t.Logf("%s: sound traffic served %v after %d idle connections", addr, time.Since(start).Round(time.Millisecond), len(conns))
				for _, c := range conns {
					c.Close()
				}
			}
		}},
		{"slow clients on each socket", func(t *testing.T) {
			var conns []net.Conn
			for _, addr := range []string{e.milterAddr, e.policyAdr} {
				for range 150 {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					conns = append(conns, c)
				}
			}
			stop := make(chan struct{})
			go func() { // a byte each 300 ms on every connection
				for {
					select {
					case <-stop:
						return
					case <-time.After(300 * time.Millisecond):
						for _, c := range conns {
							c.Write([]byte("r")) //nolint:errcheck
						}
					}
				}
			}()
			time.Sleep(1500 * time.Millisecond)
			e.healthy(t, "slow clients")
			close(stop)
			for _, c := range conns {
				c.Close()
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			e.healthy(t, tc.name)
		})
	}
	if n := len(cases); n < 30 {
		t.Errorf("the catalogue has %d cases; the issue asks for 30", n)
	}
	if log := readFile(wh.Log); strings.Contains(log, "panic") {
		t.Errorf("a panic in the log:\n%s", Tail(wh.Log, 40))
	}
}
