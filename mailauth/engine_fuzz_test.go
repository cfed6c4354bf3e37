package mailauth

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// FuzzVerify runs the whole engine on arbitrary messages and envelopes
// against a small test zone. Whatever the input, the engine must not
// panic, must name one of the four actions, must give a reply exactly
// when it refuses or tempfails, and must write an Authentication-Results
// value that our own parser reads back with the same results: a hostile
// From, HELO or DKIM tag must never break (or inject into) the header we
// add.
func FuzzVerify(f *testing.F) {
	srv := dnstest.New(f, `
example.org.        300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"
_dmarc.lists.test.  300 IN TXT "v=DMARC1; p=none"
1.2.0.192.in-addr.arpa. 300 IN PTR mail.example.org.
mail.example.org.   300 IN A   192.0.2.1
`)
	rk, ek := keys(f)
	srv.AddTXT("sel._domainkey.example.org", keyRecord(f, rk))
	srv.AddTXT("ed._domainkey.example.org", keyRecord(f, ek))
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		f.Fatal(err)
	}
	e := NewEngine(res, Config{AuthservID: "mx.test", Limits: Limits{Deadline: 5 * time.Second}})

	signed := sign(f, plainMessage, "example.org", "sel", rk)
	for _, s := range []struct{ msg, helo, from, ip string }{
		{signed, "mail.example.org", "alice@example.org", "192.0.2.1"},
		{sign(f, plainMessage, "example.org", "ed", ek), "mail.example.org", "", "192.0.2.1"},
		{plainMessage, "evil.example", "x@evil.example", "203.0.113.5"},
		{"From: a@example.org, b@lists.test\r\nList-Id: <l.lists.test>\r\n\r\nbody\r\n", "h", "a@lists.test", "2001:db8::1"},
		{"From: \"x;y\" <a@ex(ample).org>\r\nDKIM-Signature: v=1; d=exa\"mple.org; s=se(l; b=;\r\n\r\n", "x\"y", "\"a b\"@c", ""},
		{"From:\r\n\r\n", "", "", "192.0.2.9"},
		{"no header at all", "", "", ""},
		{strings.Replace(signed, "Please pay.", "Please pay more.", 1), "mail.example.org", "alice@example.org", "192.0.2.1"},
	} {
		f.Add([]byte(s.msg), s.helo, s.from, s.ip)
	}
	f.Fuzz(func(t *testing.T, msg []byte, helo, mailFrom, ip string) {
		env := Envelope{ClientIP: net.ParseIP(ip), Helo: helo, MailFrom: mailFrom, RcptTo: []string{"bob@example.net"}}
		v, err := e.Verify(context.Background(), env, bytes.NewReader(msg))
		if err != nil {
			// Only an unreadable header is an error; the milter answers
			// it with a tempfail and a log line.
			if !strings.Contains(err.Error(), "mailauth:") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		switch v.Action {
		case ActionAccept, ActionQuarantine:
			if v.Reply != nil {
				t.Fatalf("action %s with reply %v", v.Action, v.Reply)
			}
		case ActionReject, ActionTempfail:
			if v.Reply == nil || v.SMTPReply == "" || v.Reply.Check == "" {
				t.Fatalf("action %s without a full reply: %+v", v.Action, v.Reply)
			}
		default:
			t.Fatalf("action %q", v.Action)
		}
		if strings.ContainsAny(v.AuthenticationResults, "\r\n") {
			t.Fatalf("A-R value contains a line break: %q", v.AuthenticationResults)
		}
		id, rs, err := authres.Parse(v.AuthenticationResults)
		if err != nil {
			t.Fatalf("our A-R does not parse: %v\n%s", err, v.AuthenticationResults)
		}
		if id != "mx.test" || len(rs) != len(v.Results) {
			t.Fatalf("A-R read back as %q with %d results, wrote %d:\n%s", id, len(rs), len(v.Results), v.AuthenticationResults)
		}
		for i := range rs {
			if rs[i].Method != v.Results[i].Method || rs[i].Value != v.Results[i].Value {
				t.Fatalf("result %d read back as %s=%s, wrote %s=%s:\n%s", i, rs[i].Method, rs[i].Value, v.Results[i].Method, v.Results[i].Value, v.AuthenticationResults)
			}
		}
	})
}
