package spf

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

func TestCheckSPFRecord(t *testing.T) {
	tests := []struct {
		rec string
		ok  bool
	}{
		{"v=spf1", true},
		{"V=SPF1 -ALL", true},
		{"v=spf1  ip4:192.0.2.0/24   ~all  ", true},
		{"v=spf1 a mx ptr -all", true},
		{"v=spf1 a:mail.example.org/24//64 mx/28 -all", true},
		{"v=spf1 a//64 -all", true},
		{"v=spf1 ip6:2001:db8::/32 -all", true},
		{"v=spf1 include:_spf.example.com redirect=_spf.example.org", true},
		{"v=spf1 exists:%{i}.%{l2r-}.user.%{d2} -all", true},
		{"v=spf1 exists:%{ir}.%{v}._spf.%{d} -all", true},
		{"v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all", true},
		{"v=spf1 a:foo:bar/baz.example.com", true}, // valid, though the library misreads it
		{"v=spf1 foo=bar -all", true},              // unknown modifier
		{"v=spf1 moo.cow-far_out=man:dog/cat ?all", true},
		{"v=spf1 a:example.123-456", true},

		{"v=spf1 -all exp", false},
		{"v=spf1 ip4:1.2.3.4/032", false},
		{"v=spf1 ip4:1.2.3.04", false},
		{"v=spf1 ip4:1.2.3.4//32", false},
		{"v=spf1 ip4:1.2.3.4/33", false},
		{"v=spf1 ip6:2001:db8::/129", false},
		{"v=spf1 ip6", false},
		{"v=spf1 ip6:1.2.3.4", false},
		{"v=spf1 a:example.com/33", false},
		{"v=spf1 a//129", false},
		{"v=spf1 include", false},
		{"v=spf1 include:", false},
		{"v=spf1 all:foo", false},
		{"v=spf1 a:example.-com", false},
		{"v=spf1 a:example.123", false},
		{"v=spf1 a:example", false},
		{"v=spf1 a:example.com- -all", false},
		{"v=spf1 exists:%{c}.example.com", false}, // c only in exp text
		{"v=spf1 exists:%{x}.example.com", false},
		{"v=spf1 exists:%{i", false},
		{"v=spf1 a:%x.example.com", false},
		{"v=spf1 redirect=a.example.com redirect=b.example.com", false},
		{"v=spf1 exp=a.example.com exp=b.example.com", false},
		{"v=spf1 -all\tip4:1.2.3.4", false},
		{"v=spf1 a:caf\u00e9.example.com", false},
		{"v=spf1 a:b\x01.example.com", false},
		{"v=spf1 =all", false},
		{"v=spf1 -foo", false},
		{"v=spf10 -all", false},
		{"spf1 -all", false},
	}
	for _, tc := range tests {
		err := CheckRecord(tc.rec)
		if (err == nil) != tc.ok {
			t.Errorf("CheckRecord(%q) = %v, want ok=%v", tc.rec, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrSyntax) {
			t.Errorf("CheckRecord(%q) error %v does not wrap ErrSyntax", tc.rec, err)
		}
	}
}

// RFC 7208 7.4, with the sender strong-bad@email.example.com and the
// client 192.0.2.3 (and 2001:db8::cb01).
func TestMacroExpansion(t *testing.T) {
	env := &macroEnv{
		sender: "strong-bad@email.example.com", domain: "email.example.com",
		ip: net.ParseIP("192.0.2.3"), helo: "mx.example.org", receiver: "mx.example.net",
		now: time.Unix(1700000000, 0),
	}
	env6 := *env
	env6.ip = net.ParseIP("2001:db8::cb01")
	tests := []struct {
		env  *macroEnv
		in   string
		want string
	}{
		{env, "%{s}", "strong-bad@email.example.com"},
		{env, "%{o}", "email.example.com"},
		{env, "%{d}", "email.example.com"},
		{env, "%{d4}", "email.example.com"},
		{env, "%{d3}", "email.example.com"},
		{env, "%{d2}", "example.com"},
		{env, "%{d1}", "com"},
		{env, "%{dr}", "com.example.email"},
		{env, "%{d2r}", "example.email"},
		{env, "%{l}", "strong-bad"},
		{env, "%{l-}", "strong.bad"},
		{env, "%{lr}", "strong-bad"},
		{env, "%{lr-}", "bad.strong"},
		{env, "%{l1r-}", "strong"},
		{env, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
		{env, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
		{env, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{env, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{env, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
		{&env6, "%{ir}.%{v}._spf.%{d2}", "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"},
		{env, "%%%_%-", "% %20"},
		{env, "%{c} %{r} %{t} %{h}", "192.0.2.3 mx.example.net 1700000000 mx.example.org"},
		{env, "%{S}", "strong-bad%40email.example.com"},
	}
	for _, tc := range tests {
		got, err := tc.env.expandMacros(tc.in, true)
		if err != nil || got != tc.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := env.expandMacros("%{c}", false); err == nil {
		t.Error("%{c} accepted outside exp text")
	}
}

// The exp= that explains a fail is the one of the record that produced
// it: a redirect hands over to the target's, an include does not
// (RFC 7208 6.2).
func TestSPFExplanation(t *testing.T) {
	srv := dnstest.New(t, `
direct.example.      300 IN TXT "v=spf1 -all exp=why.example."
why.example.         300 IN TXT "%{i} may not send for %{d} (%{s})"
redir.example.       300 IN TXT "v=spf1 exp=why.example. redirect=target.example."
target.example.      300 IN TXT "v=spf1 -all exp=why2.example."
why2.example.        300 IN TXT "target says no"
inc.example.         300 IN TXT "v=spf1 -include:incpass.example. ~all exp=why3.example."
incpass.example.     300 IN TXT "v=spf1 +all exp=why2.example."
why3.example.        300 IN TXT "includer says no"
noexp.example.       300 IN TXT "v=spf1 -all"
multi.example.       300 IN TXT "v=spf1 -all exp=two.example."
two.example.         300 IN TXT "one"
two.example.         300 IN TXT "two"
soft.example.        300 IN TXT "v=spf1 ~all exp=why.example."
`)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	c := New(res, Config{Receiver: "mx.test"})
	ip := net.ParseIP("192.0.2.9")
	tests := []struct{ domain, result, exp string }{
		{"direct.example", "fail", "192.0.2.9 may not send for direct.example (user@direct.example)"},
		{"redir.example", "fail", "target says no"},
		{"inc.example", "fail", "includer says no"},
		{"noexp.example", "fail", "noexp.example does not designate 192.0.2.9 as a permitted sender"},
		{"multi.example", "fail", "multi.example does not designate 192.0.2.9 as a permitted sender"},
		{"soft.example", "softfail", ""},
	}
	for _, tc := range tests {
		r := c.CheckMailFrom(context.Background(), ip, "helo.example", "user@"+tc.domain)
		if string(r.Result) != tc.result || r.Explanation != tc.exp {
			t.Errorf("%s: %s %q, want %s %q", tc.domain, r.Result, r.Explanation, tc.result, tc.exp)
		}
	}
}

func TestSPFIdentity(t *testing.T) {
	tests := []struct{ mailFrom, helo, identity, domain string }{
		{"user@example.org", "mx.example.net", "user@example.org", "example.org"},
		{"<user@example.org>", "mx.example.net", "user@example.org", "example.org"},
		{"", "mx.example.net", "postmaster@mx.example.net", "mx.example.net"},
		{"<>", "mx.example.net", "postmaster@mx.example.net", "mx.example.net"},
		{"@example.org", "mx.example.net", "postmaster@example.org", "example.org"},
		{`"odd@local"@example.org`, "mx.example.net", `"odd@local"@example.org`, "example.org"},
	}
	for _, tc := range tests {
		id, d := MailFromIdentity(tc.mailFrom, tc.helo)
		if id != tc.identity || d != tc.domain {
			t.Errorf("MailFromIdentity(%q) = %q %q, want %q %q", tc.mailFrom, id, d, tc.identity, tc.domain)
		}
	}
}

func TestSPFResults(t *testing.T) {
	srv := dnstest.New(t, `
example.org.        300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
mx.example.net.     300 IN TXT "v=spf1 a -all"
mx.example.net.     300 IN A 192.0.2.25
bad.example.        300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all foo"
slow.example.       300 IN TXT "v=spf1 -all"
`)
	srv.ServFail("broken.example")
	srv.Delay("slow.example", 2*time.Second)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := New(res, Config{Timeout: 300 * time.Millisecond})
	ctx := context.Background()
	tests := []struct {
		name, ip, helo, from string
		result, domain       string
		errPart              string
	}{
		{"pass", "192.0.2.1", "h.example", "a@example.org", "pass", "example.org", ""},
		{"fail", "198.51.100.1", "h.example", "a@example.org", "fail", "example.org", ""},
		{"null sender uses HELO", "192.0.2.25", "mx.example.net", "", "pass", "mx.example.net", ""},
		{"none", "192.0.2.1", "h.example", "a@nothing.example", "none", "nothing.example", ""},
		{"syntax error after match", "192.0.2.1", "h.example", "a@bad.example", "permerror", "bad.example", "syntax error"},
		{"servfail", "192.0.2.1", "h.example", "a@broken.example", "temperror", "broken.example", "SERVFAIL"},
		{"deadline", "192.0.2.1", "h.example", "a@slow.example", "temperror", "slow.example", "deadline"},
		{"single label", "192.0.2.1", "h.example", "a@localhost", "none", "localhost", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := c.CheckMailFrom(ctx, net.ParseIP(tc.ip), tc.helo, tc.from)
			if string(r.Result) != tc.result || r.Domain != tc.domain || r.Scope != ScopeMailFrom {
				t.Fatalf("got %+v, want %s for %s", r, tc.result, tc.domain)
			}
			if !strings.Contains(r.Error, tc.errPart) || (tc.errPart == "" && r.Error != "") {
				t.Fatalf("error %q, want it to contain %q", r.Error, tc.errPart)
			}
			if r.Result == "pass" && r.Error != "" {
				t.Fatalf("pass carries an error: %q", r.Error)
			}
		})
	}
	h := c.CheckHelo(ctx, net.ParseIP("192.0.2.26"), "mx.example.net")
	if h.Result != "fail" || h.Scope != ScopeHelo || h.Domain != "mx.example.net" {
		t.Fatalf("HELO check: %+v", h)
	}
}

// Which record's exp= explains a fail, found from the lookups the
// library made (not its trace text): through redirects, not includes,
// and not a redirect the evaluation never reached.
func TestExplanationThroughRedirects(t *testing.T) {
	srv := dnstest.New(t, `
chain.example.   300 IN TXT "v=spf1 exp=e0.example redirect=r1.example"
r1.example.      300 IN TXT "v=spf1 include:pass.example exp=e1.example redirect=r2.example"
r2.example.      300 IN TXT "v=spf1 -all exp=e2.example"
pass.example.    300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all exp=epass.example"
early.example.   300 IN TXT "v=spf1 include:r2.example -ip4:192.0.2.0/24 exp=e3.example redirect=r2.example"
twice.example.   300 IN TXT "v=spf1 include:notyet.example redirect=notyet.example exp=e4.example"
notyet.example.  300 IN TXT "v=spf1 ip4:203.0.113.0/24 exp=e5.example redirect=r2.example"
macro.example.   300 IN TXT "v=spf1 redirect=%{d1r}.r.example"
macro.r.example. 300 IN TXT "v=spf1 -all exp=e6.example"
e0.example.      300 IN TXT "top record"
e1.example.      300 IN TXT "first redirect"
e2.example.      300 IN TXT "second redirect"
e3.example.      300 IN TXT "the record that matched, before its redirect"
e4.example.      300 IN TXT "twice, top"
e5.example.      300 IN TXT "twice, notyet"
e6.example.      300 IN TXT "through a macro"
epass.example.   300 IN TXT "an include's: never"
`)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	c := New(res, Config{Receiver: "mx.test"})
	for _, tc := range []struct{ domain, exp string }{
		{"chain.example", "second redirect"},
		// -ip4 matches before the redirect: the record's own exp=, although
		// the include already fetched the redirect's target.
		{"early.example", "the record that matched, before its redirect"},
		// include:notyet (no match) then redirect=notyet, then its redirect.
		{"twice.example", "second redirect"},
		{"macro.example", "through a macro"},
	} {
		r := c.CheckMailFrom(context.Background(), net.ParseIP("192.0.2.9"), "helo.example", "user@"+tc.domain)
		if r.Result != Fail || r.Explanation != tc.exp {
			t.Errorf("%s: %s %q, want fail %q", tc.domain, r.Result, r.Explanation, tc.exp)
		}
	}
}

// Issue 12.2: a MAIL FROM with white space after the "@", as a lenient
// MTA accepted it, is read as the address it meant.
func TestMailFromIdentityLenient(t *testing.T) {
	for in, want := range map[string][2]string{
		"marc@ marcbradshaw.net":   {"marc@marcbradshaw.net", "marcbradshaw.net"},
		"<marc @marcbradshaw.net>": {"marc@marcbradshaw.net", "marcbradshaw.net"},
		"marc@marcbradshaw.net":    {"marc@marcbradshaw.net", "marcbradshaw.net"},
		"@ example.org":            {"postmaster@example.org", "example.org"},
		"":                         {"postmaster@helo.example", "helo.example"},
	} {
		id, d := MailFromIdentity(in, "helo.example")
		if id != want[0] || d != want[1] {
			t.Errorf("MailFromIdentity(%q) = %q %q, want %q %q", in, id, d, want[0], want[1])
		}
	}
}
