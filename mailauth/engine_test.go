package mailauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/setting"
)

// The world of the engine tests:
//   - bank.example: p=reject, SPF -all for 198.51.100.0/24, a DKIM key.
//   - softbank.example: p=reject, SPF ~all (no author SPF evidence).
//   - evil.example: a forger whose own SPF passes for 203.0.113.0/24;
//     203.0.113.5 has confirming reverse DNS, 203.0.113.6 does not.
//   - fwd.example: a forwarder at 192.0.2.2.
//   - lists.example.net: a mailing list at 192.0.2.3 that re-signs.
const engineZone = `
_dmarc.bank.example.      300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@bank.example"
bank.example.             300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
bank.example.             300 IN A   198.51.100.1
_dmarc.softbank.example.  300 IN TXT "v=DMARC1; p=reject"
softbank.example.         300 IN TXT "v=spf1 ip4:198.51.100.0/24 ~all"
evil.example.             300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
5.113.0.203.in-addr.arpa. 300 IN PTR mail.evil.example.
mail.evil.example.        300 IN A   203.0.113.5
6.113.0.203.in-addr.arpa. 300 IN PTR liar.example.
liar.example.             300 IN A   192.0.2.99
fwd.example.              300 IN TXT "v=spf1 ip4:192.0.2.2 -all"
2.2.0.192.in-addr.arpa.   300 IN PTR mx.fwd.example.
mx.fwd.example.           300 IN A   192.0.2.2
lists.example.net.        300 IN TXT "v=spf1 ip4:192.0.2.3 -all"
3.2.0.192.in-addr.arpa.   300 IN PTR mail.lists.example.net.
mail.lists.example.net.   300 IN A   192.0.2.3
1.100.51.198.in-addr.arpa. 300 IN PTR mail.bank.example.
mail.bank.example.        300 IN A   198.51.100.1
_dmarc.quar.example.      300 IN TXT "v=DMARC1; p=quarantine"
_dmarc.none.example.      300 IN TXT "v=DMARC1; p=none"
_dmarc.test.example.      300 IN TXT "v=DMARC1; p=reject; t=y"
_dmarc.testq.example.     300 IN TXT "v=DMARC1; p=quarantine; t=y"
_dmarc.pct.example.       300 IN TXT "v=DMARC1; p=reject; pct=0"
_dmarc.strict.example.    300 IN TXT "v=DMARC1; p=reject; aspf=s; adkim=s"
strict.example.           300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
bounce.bank.example.      300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
bounce.strict.example.    300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.org.example.       300 IN TXT "v=DMARC1; p=reject; sp=quarantine; np=none"
sub.org.example.          300 IN A   198.51.100.9
_dmarc.np.example.        300 IN TXT "v=DMARC1; p=none; sp=none; np=reject"
real.np.example.          300 IN MX  10 mx.np.example.
_dmarc.sub.multi.example. 300 IN TXT "v=DMARC1; p=none"
_dmarc.sub.multi.example. 300 IN TXT "v=DMARC1; p=none; sp=none"
_dmarc.multi.example.     300 IN TXT "v=DMARC1; p=reject"
`

type world struct {
	srv *dnstest.Server
	res *resolver.Resolver
}

func newWorld(t *testing.T) *world {
	t.Helper()
	srv := dnstest.New(t, engineZone)
	rk, ek := keys(t)
	srv.AddTXT("sel._domainkey.bank.example", keyRecord(t, rk))
	srv.AddTXT("sel._domainkey.lists.example.net", keyRecord(t, ek))
	srv.AddTXT("sel._domainkey.fwd.example", keyRecord(t, ek))
	srv.AddTXT("sel._domainkey.mail.strict.example", keyRecord(t, ek))
	srv.ServFail("_dmarc.flaky.example")
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &world{srv: srv, res: res}
}

func (w *world) engine(mod func(*Config)) *Engine {
	cfg := Config{AuthservID: "mx.test", DMARC: DMARCConfig{PctZeroIsTesting: true, MailingLists: MailingLists{Enabled: true}}}
	if mod != nil {
		mod(&cfg)
	}
	return NewEngine(w.res, cfg)
}

func verify(t *testing.T, e *Engine, ip, mailFrom, msg string) *Verdict {
	t.Helper()
	env := Envelope{ClientIP: net.ParseIP(ip), Helo: "helo.test", MailFrom: mailFrom}
	v, err := e.Verify(context.Background(), env, bytes.NewReader([]byte(msg)))
	if err != nil {
		t.Fatal(err)
	}
	// Whatever the verdict, the header we would write parses back.
	if _, rs, err := authres.Parse(v.AuthenticationResults); err != nil || len(rs) != len(v.Results) {
		t.Fatalf("A-R %q does not parse back: %v", v.AuthenticationResults, err)
	}
	return v
}

func message(from string, extra ...string) string {
	return "From: " + from + "\r\n" + strings.Join(extra, "") + "To: user@mx.test\r\nSubject: Invoice\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@test>\r\n\r\nPay now.\r\n"
}

func TestDMARCPolicies(t *testing.T) {
	w := newWorld(t)
	rk, ek := keys(t)
	e := w.engine(nil)
	tests := []struct {
		name                string
		ip, mailFrom, msg   string
		result, policy, tag string
		disposition, action string
		overrides           string
		testing             bool
	}{
		{"aligned SPF pass", "198.51.100.7", "billing@bank.example", message("billing@bank.example"), "pass", "reject", "p", "none", "accept", "", false},
		{"aligned DKIM pass", "192.0.2.2", "x@fwd.example", sign(t, message("billing@bank.example"), "bank.example", "sel", rk), "pass", "reject", "p", "none", "accept", "", false},
		{"relaxed: SPF of a subdomain aligns", "198.51.100.7", "b@bounce.bank.example", message("a@bank.example"), "pass", "reject", "p", "none", "accept", "", false},
		{"strict: SPF of a subdomain does not", "198.51.100.7", "b@bounce.strict.example", message("a@strict.example"), "fail", "reject", "p", "quarantine", "quarantine", "other", false},
		{"strict: DKIM of a subdomain", "203.0.113.5", "x@evil.example", sign(t, message("a@strict.example"), "mail.strict.example", "sel", ek), "fail", "reject", "p", "quarantine", "quarantine", "other", false},
		{"p=quarantine", "203.0.113.5", "x@evil.example", message("a@quar.example"), "fail", "quarantine", "p", "quarantine", "quarantine", "", false},
		{"p=none", "203.0.113.5", "x@evil.example", message("a@none.example"), "fail", "none", "p", "none", "accept", "", false},
		{"sp for an existing subdomain", "203.0.113.5", "x@evil.example", message("a@sub.org.example"), "fail", "quarantine", "sp", "quarantine", "quarantine", "", false},
		{"np for a non-existent subdomain", "203.0.113.5", "x@evil.example", message("a@ghost.org.example"), "fail", "none", "np", "none", "accept", "", false},
		{"np reject", "203.0.113.5", "x@evil.example", message("a@ghost.np.example"), "fail", "reject", "np", "quarantine", "quarantine", "other", false},
		{"sp where np exists", "203.0.113.5", "x@evil.example", message("a@real.np.example"), "fail", "none", "sp", "none", "accept", "", false},
		{"t=y: reject as quarantine", "203.0.113.5", "x@evil.example", message("a@test.example"), "fail", "reject", "p", "quarantine", "quarantine", "policy_test_mode", true},
		{"t=y: quarantine as none", "203.0.113.5", "x@evil.example", message("a@testq.example"), "fail", "quarantine", "p", "none", "accept", "policy_test_mode", true},
		{"legacy pct=0 as t=y", "203.0.113.5", "x@evil.example", message("a@pct.example"), "fail", "reject", "p", "quarantine", "quarantine", "policy_test_mode", true},
		{"no DMARC record", "203.0.113.5", "x@evil.example", message("a@evil.example"), "none", "", "", "none", "accept", "", false},
		{"several records discarded, walk goes on", "203.0.113.5", "x@evil.example", message("a@sub.multi.example"), "fail", "reject", "p", "quarantine", "quarantine", "other", false},
		{"temperror accepts", "203.0.113.5", "x@evil.example", message("a@flaky.example"), "temperror", "", "", "none", "accept", "", false},
		{"U-label From domain", "203.0.113.5", "x@evil.example", message("a@bänk.example"), "none", "", "", "none", "accept", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, e, tc.ip, tc.mailFrom, tc.msg)
			d := v.DMARC
			if string(d.Result) != tc.result || d.Policy != tc.policy || d.PolicyTag != tc.tag || d.Disposition != tc.disposition ||
				v.Action != tc.action || strings.Join(d.Overrides, ",") != tc.overrides || d.Testing != tc.testing {
				t.Fatalf("got result=%s policy=%s(%s) disposition=%s action=%s overrides=%v testing=%v (%s)\nwant %s %s(%s) %s %s %s %v",
					d.Result, d.Policy, d.PolicyTag, d.Disposition, v.Action, d.Overrides, d.Testing, d.Reason,
					tc.result, tc.policy, tc.tag, tc.disposition, tc.action, tc.overrides, tc.testing)
			}
		})
	}
	// The U-label From domain was looked up as an A-label.
	if w.srv.QueryCount("_dmarc.xn--bnk-qla.example", 16) == 0 {
		t.Error("_dmarc.xn--bnk-qla.example not queried")
	}

	// Without the legacy pct=0 rule, pct is ignored.
	e2 := w.engine(func(c *Config) { c.DMARC.PctZeroIsTesting = false })
	if v := verify(t, e2, "203.0.113.5", "x@evil.example", message("a@pct.example")); v.DMARC.Testing {
		t.Error("pct=0 treated as testing with the option off")
	}
	// RFC 7489 mode: several records at _dmarc.<author> mean no policy.
	e3 := w.engine(func(c *Config) { c.DMARC.Discovery = DiscoveryPSL })
	if v := verify(t, e3, "203.0.113.5", "x@evil.example", message("a@sub.multi.example")); v.DMARC.Result != "none" || v.DMARC.Discovery != "psl" {
		t.Errorf("PSL mode with several records: %+v", v.DMARC)
	}
	// DMARC temperror can be a 451.
	e4 := w.engine(func(c *Config) { c.DMARC.OnTempError = "tempfail" })
	if v := verify(t, e4, "203.0.113.5", "x@evil.example", message("a@flaky.example")); v.Action != "tempfail" || !strings.HasPrefix(v.SMTPReply, "451 4.7.5 ") {
		t.Errorf("temperror with tempfail: %s %q", v.Action, v.SMTPReply)
	}
}

func TestAuthorDomains(t *testing.T) {
	w := newWorld(t)
	e := w.engine(nil)
	tests := []struct {
		name   string
		header string
		result string
		from   string
		action string
	}{
		{"no From", "To: x@y.example\r\n", "permerror", "", "accept"},
		{"From without address", "From: undisclosed-recipients:;\r\n", "permerror", "", "accept"},
		{"two addresses one domain", "From: a@bank.example, b@bank.example\r\n", "fail", "bank.example", "reject"},
		{"several domains: strictest failing policy", "From: a@none.example, b@bank.example\r\n", "fail", "bank.example", "reject"},
		{"two From fields", "From: a@none.example\r\nFrom: b@quar.example\r\n", "fail", "quar.example", "quarantine"},
		{"display name and comment", "From: \"Bank, Inc.\" <alerts@BANK.example> (note)\r\n", "fail", "bank.example", "reject"},
		{"obsolete space before colon", "From : a@quar.example\r\n", "fail", "quar.example", "quarantine"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.header + "Subject: x\r\n\r\nbody\r\n"
			v := verify(t, e, "203.0.113.6", "x@evil.example", msg)
			if string(v.DMARC.Result) != tc.result || v.DMARC.FromDomain != tc.from || v.Action != tc.action {
				t.Fatalf("got %s from %q action %s (%s), want %s %q %s", v.DMARC.Result, v.DMARC.FromDomain, v.Action, v.DMARC.Reason, tc.result, tc.from, tc.action)
			}
		})
	}
	er := w.engine(func(c *Config) { c.DMARC.OnNoAuthor = "reject" })
	v := verify(t, er, "203.0.113.6", "x@evil.example", "Subject: x\r\n\r\nbody\r\n")
	if v.Action != "reject" || !strings.HasPrefix(v.SMTPReply, "550 5.7.1 ") || v.Reply.Check != "dmarc" {
		t.Fatalf("no author with reject: %s %q", v.Action, v.SMTPReply)
	}
}

func TestOverrides(t *testing.T) {
	w := newWorld(t)
	_, ek := keys(t)
	bankMsg := message("ceo@bank.example")
	listMsg := sign(t, message("ceo@bank.example", "List-Id: Staff <staff.lists.example.net>\r\n"), "lists.example.net", "sel", ek)
	tests := []struct {
		name        string
		mod         func(*Config)
		ip, from    string
		msg         string
		disposition string
		overrides   string
	}{
		{"none: the spoof is refused", nil, "203.0.113.5", "x@evil.example", bankMsg, "reject", ""},
		{"local_policy network", func(c *Config) {
			c.DMARC.LocalPolicy.Networks = setting.Networks("203.0.113.0/24")
		},
			"203.0.113.5", "x@evil.example", bankMsg, "none", "local_policy"},
		{"local_policy From domain", func(c *Config) { c.DMARC.LocalPolicy.FromDomains = []string{"bank.example"} },
			"203.0.113.5", "x@evil.example", bankMsg, "none", "local_policy"},
		{"local_policy disposition quarantine", func(c *Config) {
			c.DMARC.LocalPolicy.FromDomains = []string{"bank.example"}
			c.DMARC.LocalPolicy.Disposition = PolicyQuarantine
		}, "203.0.113.5", "x@evil.example", bankMsg, "quarantine", "local_policy"},
		{"trusted_forwarder network", func(c *Config) {
			c.DMARC.TrustedForwarders.Networks = setting.Networks("192.0.2.2/32")
		},
			"192.0.2.2", "x@fwd.example", bankMsg, "none", "trusted_forwarder"},
		{"trusted_forwarder DKIM domain", func(c *Config) { c.DMARC.TrustedForwarders.DKIMDomains = []string{"fwd.example"} },
			"192.0.2.2", "x@fwd.example", sign(t, bankMsg, "fwd.example", "sel", ek), "none", "trusted_forwarder"},
		{"mailing list that vouches (DKIM and SPF)", nil, "192.0.2.3", "bounces@lists.example.net", listMsg, "quarantine", "mailing_list"},
		{"mailing list allowed by name", func(c *Config) { c.DMARC.MailingLists.Domains = []string{"example.net"} },
			"192.0.2.3", "bounces@lists.example.net", listMsg, "quarantine", "mailing_list"},
		// Without the override the refusal rule decides: the bank's SPF
		// fails for the list server and the bank never signed.
		{"mailing list restricted to other lists", func(c *Config) { c.DMARC.MailingLists.Domains = []string{"lists.other.example"} },
			"192.0.2.3", "bounces@lists.example.net", listMsg, "reject", ""},
		{"mailing lists disabled", func(c *Config) { c.DMARC.MailingLists.Enabled = false },
			"192.0.2.3", "bounces@lists.example.net", listMsg, "reject", ""},
		{"forged List-Id does not override", nil, "203.0.113.5", "x@evil.example",
			message("ceo@bank.example", "List-Id: <staff.lists.example.net>\r\nList-Post: <mailto:staff@lists.example.net>\r\n"), "reject", ""},
		// A forger can run a "list" in a domain of their own that they
		// authenticate: the override then lowers reject to quarantine,
		// never further (restrict mailing_lists.domains to stop even that).
		{"forger's own list domain: quarantine at most", nil, "203.0.113.5", "x@evil.example",
			message("ceo@bank.example", "List-Id: <l.evil.example>\r\n"), "quarantine", "mailing_list"},
		{"forger's own list domain, lists restricted", func(c *Config) { c.DMARC.MailingLists.Domains = []string{"lists.example.net"} },
			"203.0.113.5", "x@evil.example", message("ceo@bank.example", "List-Id: <l.evil.example>\r\n"), "reject", ""},
		{"t=y and mailing list both recorded", nil, "192.0.2.3", "bounces@lists.example.net",
			sign(t, message("ceo@test.example", "List-Id: <staff.lists.example.net>\r\n"), "lists.example.net", "sel", ek), "quarantine", "policy_test_mode,mailing_list"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, w.engine(tc.mod), tc.ip, tc.from, tc.msg)
			if v.DMARC.Result != "fail" || v.DMARC.Disposition != tc.disposition || strings.Join(v.DMARC.Overrides, ",") != tc.overrides {
				t.Fatalf("got %s disposition %s overrides %v (%s), want %s %s", v.DMARC.Result, v.DMARC.Disposition, v.DMARC.Overrides, v.DMARC.Reason, tc.disposition, tc.overrides)
			}
		})
	}
}

// TestRefusalRule is the truth table of the refusal rule, in each mode.
// Columns: the case, what each mode does with it, and the evidence the
// evidence mode finds.
func TestRefusalRule(t *testing.T) {
	w := newWorld(t)
	rk, ek := keys(t)
	// A message the bank signed, then modified by a forwarder (footer):
	// the bank's signature is there but breaks.
	forwarded := strings.Replace(sign(t, message("ceo@bank.example"), "bank.example", "sel", rk), "Pay now.", "Pay now.\r\n-- \r\nforwarded", 1)
	tests := []struct {
		name     string
		ip, from string
		msg      string
		// disposition in evidence, honor and quarantine mode
		evidence, honor, quarantine string
		boosters                    string
	}{
		{"direct spoof: MAIL FROM and From the bank, foreign IP", "203.0.113.5", "ceo@bank.example", message("ceo@bank.example"),
			"reject", "reject", "quarantine", "author_spf_fail,mail_from_spf_fail"},
		{"common spoof: forger's own SPF passes, bank's SPF fails", "203.0.113.5", "x@evil.example", message("ceo@bank.example"),
			"reject", "reject", "quarantine", "author_spf_fail"},
		{"common spoof against a ~all bank, confirmed rDNS: no evidence", "203.0.113.5", "x@evil.example", message("ceo@softbank.example"),
			"quarantine", "reject", "quarantine", ""},
		{"~all bank but iprev fails", "203.0.113.6", "x@evil.example", message("ceo@softbank.example"),
			"reject", "reject", "quarantine", "iprev_fail"},
		{"forwarded with a broken bank signature", "192.0.2.2", "x@fwd.example", forwarded,
			"quarantine", "reject", "quarantine", "author_spf_fail"},
		{"bogus signature of the bank pasted by a forger", "203.0.113.6", "x@evil.example",
			strings.Replace(sign(t, message("ceo@bank.example"), "bank.example", "sel", ek), "Pay now.", "Pay me.", 1),
			"quarantine", "reject", "quarantine", "author_spf_fail,iprev_fail"},
		{"p=reject but DMARC passes", "198.51.100.7", "ceo@bank.example", message("ceo@bank.example"),
			"none", "none", "none", ""},
		{"p=reject with t=y is never refused", "203.0.113.6", "x@evil.example", message("ceo@test.example"),
			"quarantine", "quarantine", "quarantine", ""},
		{"temperror never refuses", "203.0.113.6", "ceo@flaky.example", message("ceo@flaky.example"),
			"none", "none", "none", ""},
	}
	modes := []string{RefuseEvidence, RefuseHonor, RefuseQuarantine}
	for _, tc := range tests {
		for i, mode := range modes {
			want := []string{tc.evidence, tc.honor, tc.quarantine}[i]
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				e := w.engine(func(c *Config) { c.DMARC.Refusal = mode; c.DMARC.ReferenceURL = "https://mx.test/dmarc" })
				v := verify(t, e, tc.ip, tc.from, tc.msg)
				if v.DMARC.Disposition != want {
					t.Fatalf("disposition %s, want %s (result %s, evidence %v, overrides %v, %s)",
						v.DMARC.Disposition, want, v.DMARC.Result, v.DMARC.RefusalEvidence, v.DMARC.Overrides, v.DMARC.Reason)
				}
				if mode == RefuseEvidence && strings.Join(v.DMARC.RefusalEvidence, ",") != tc.boosters {
					t.Errorf("evidence %v, want %s", v.DMARC.RefusalEvidence, tc.boosters)
				}
				switch want {
				case PolicyReject:
					r := v.Reply
					if v.Action != ActionReject || r == nil || r.Code != 550 || r.Enhanced != "5.7.1" || r.Check != "dmarc" || r.Valid() != nil {
						t.Fatalf("refusal reply %+v", r)
					}
					if !strings.Contains(r.Text, "publishes DMARC policy reject") || !strings.HasSuffix(r.Text, "; see https://mx.test/dmarc") {
						t.Errorf("reply text %q", r.Text)
					}
				case PolicyQuarantine:
					if v.Action != ActionQuarantine || v.SMTPReply != "" {
						t.Errorf("action %s reply %q", v.Action, v.SMTPReply)
					}
					if v.DMARC.Result == "fail" && !v.DMARC.Testing && !strings.Contains(strings.Join(v.DMARC.Overrides, ","), "other") {
						t.Errorf("quarantine below the published reject without reason other: %v", v.DMARC.Overrides)
					}
				default:
					if v.Action != ActionAccept {
						t.Errorf("action %s", v.Action)
					}
				}
			})
		}
	}
}

func TestRefusalText(t *testing.T) {
	w := newWorld(t)
	v := verify(t, w.engine(nil), "203.0.113.5", "x@evil.example", message("ceo@bank.example"))
	want := "550 5.7.1 Message rejected: bank.example publishes DMARC policy reject and this message is not authenticated by bank.example (its SPF record does not permit 203.0.113.5; no DKIM signature of bank.example)"
	if v.SMTPReply != want {
		t.Fatalf("reply\n%q\nwant\n%q", v.SMTPReply, want)
	}
	if !strings.Contains(v.AuthenticationResults, "dmarc=fail") || !strings.Contains(v.AuthenticationResults, "policy.dmarc=reject") ||
		!strings.Contains(v.AuthenticationResults, "header.from=bank.example") {
		t.Errorf("A-R %q", v.AuthenticationResults)
	}
}

func TestLimits(t *testing.T) {
	w := newWorld(t)
	// Header cap: a clear permanent refusal, not a tempfail.
	e := w.engine(func(c *Config) { c.Limits.HeaderBytes = 1000 })
	big := "From: a@bank.example\r\nX-Pad: " + strings.Repeat("x", 2000) + "\r\n\r\nbody\r\n"
	v := verify(t, e, "203.0.113.5", "x@evil.example", big)
	if v.Action != ActionReject || v.Reply.Code != 552 || v.Reply.Enhanced != "5.3.4" || v.Reply.Check != "limits" {
		t.Fatalf("oversized header: %s %+v", v.Action, v.Reply)
	}
	// DNS budget: once a check's share is spent, its lookups fail
	// temporarily, never fail hard.
	b := &budget{Resolver: w.res, check: "SPF", max: 1}
	b.left.Store(1)
	b.LookupTXT(context.Background(), "bank.example")
	if _, err := b.LookupTXT(context.Background(), "bank.example"); err == nil || !err.(*net.DNSError).IsTemporary || b.used() != 1 {
		t.Fatalf("past the budget: %v, used %d", err, b.used())
	}
	// The deadline: a DNS server that never answers ends in temperror in
	// time.
	w.srv.Timeout("_dmarc.slow.example")
	e = w.engine(func(c *Config) { c.Limits.Deadline = 300 * time.Millisecond })
	start := time.Now()
	v = verify(t, e, "203.0.113.5", "x@evil.example", message("ceo@slow.example"))
	if v.DMARC.Result != "temperror" || time.Since(start) > 3*time.Second {
		t.Fatalf("deadline: %s after %v", v.DMARC.Result, time.Since(start))
	}
}

func TestVerdictJSONShape(t *testing.T) {
	w := newWorld(t)
	v := verify(t, w.engine(nil), "203.0.113.5", "x@evil.example", message("ceo@none.example"))
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// The keys of the JSON contract (README, "Command-line contract").
	for _, k := range []string{"spf", "dkim", "dmarc", "iprev", "auth", "authentication_results", "action", "smtp_reply"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
	// Lists are [] rather than null, so jq '.dkim | length' works.
	dmarc, _ := got["dmarc"].(map[string]any)
	for name, list := range map[string]any{"dkim": got["dkim"], "dmarc.overrides": dmarc["overrides"], "dmarc.refusal_evidence": dmarc["refusal_evidence"]} {
		if _, ok := list.([]any); !ok {
			t.Errorf("%s is %v, want a list: %s", name, list, b)
		}
	}
	iprev, _ := got["iprev"].(map[string]any)
	if iprev["result"] != "pass" || iprev["name"] != "mail.evil.example" {
		t.Errorf("iprev %v", got["iprev"])
	}
}

// fakeHistory answers Passed from a map; err makes it unknown.
type fakeHistory struct {
	passed map[string]bool
	err    error
}

func (f fakeHistory) Passed(_ context.Context, domain string, _ net.IP) (bool, error) {
	return f.passed[domain], f.err
}

// The pass-history booster: a network that never sent passing mail for
// the domain is evidence; an unknown history (store down) never is.
func TestPassHistoryBooster(t *testing.T) {
	w := newWorld(t)
	// softbank: ~all, confirmed rDNS: no other evidence.
	spoof := message("ceo@softbank.example")
	tests := []struct {
		name        string
		h           History
		disposition string
		evidence    string
	}{
		{"no history configured", nil, "quarantine", ""},
		{"network never passed", fakeHistory{passed: map[string]bool{}}, "reject", "no_pass_history"},
		{"network passed before", fakeHistory{passed: map[string]bool{"softbank.example": true}}, "quarantine", ""},
		{"history unknown", fakeHistory{err: errors.New("store unavailable")}, "quarantine", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, w.engine(func(c *Config) { c.History = tc.h }), "203.0.113.5", "x@evil.example", spoof)
			if v.DMARC.Disposition != tc.disposition || strings.Join(v.DMARC.RefusalEvidence, ",") != tc.evidence {
				t.Fatalf("%s %v, want %s %s", v.DMARC.Disposition, v.DMARC.RefusalEvidence, tc.disposition, tc.evidence)
			}
			if tc.disposition == "reject" && !strings.Contains(v.SMTPReply, "203.0.113.5 never sent authenticated mail for softbank.example here") {
				t.Errorf("reply %q", v.SMTPReply)
			}
		})
	}
}

// panicOn is a resolver that panics for one TXT name, as a bug in a
// record parser would on a sender's record.
type panicOn struct {
	Resolver
	name string
}

func (p panicOn) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if strings.TrimSuffix(name, ".") == p.name {
		panic("test: bug on " + name)
	}
	return p.Resolver.LookupTXT(ctx, name)
}

// A panic in one check is never a result: a spoof of bank.example whose
// DMARC discovery panics would otherwise be temperror and, with the
// default on_temperror: accept, delivered; a panic in SPF would turn a
// result into temperror. Verify returns an InternalError instead (the
// milter answers 451).
func TestPanicInACheckIsNoVerdict(t *testing.T) {
	w := newWorld(t)
	for _, name := range []string{"_dmarc.bank.example", "evil.example"} {
		e := NewEngine(panicOn{w.res, name}, Config{AuthservID: "mx.test"})
		env := Envelope{ClientIP: net.ParseIP("203.0.113.5"), Helo: "mail.evil.example", MailFrom: "x@evil.example"}
		v, err := e.Verify(context.Background(), env, strings.NewReader(message("ceo@bank.example")))
		ie, ok := errors.AsType[*InternalError](err)
		if !ok || v != nil || len(ie.Stack) == 0 {
			t.Fatalf("panic on %s: verdict %+v, error %v", name, v, err)
		}
	}
}
