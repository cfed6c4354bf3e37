package mailauth

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/spf"
)

// The forger of these tests sends from 203.0.113.5, which his own SPF
// record (evil.example) permits and whose reverse DNS confirms, and
// writes From: ceo@bank.example (p=reject, SPF -all for another
// network). Whatever he does with what he controls (his DNS, the From
// header, the signatures), the spoof must never be accepted.

// wantRefused fails unless the verdict refuses the spoof of bank.example.
func wantRefused(t *testing.T, v *Verdict) {
	t.Helper()
	if v.Action != ActionReject || v.Reply == nil || v.Reply.Code != 550 {
		t.Fatalf("spoof of bank.example: action %s, reply %q, dmarc %s for %s (%s)", v.Action, v.SMTPReply, v.DMARC.Result, v.DMARC.FromDomain, v.DMARC.Reason)
	}
}

// Item 1: the forger's DNS (the MAIL FROM or DKIM domain's _dmarc
// record) fails; the identifier cannot align with bank.example whatever
// it answers, so it is not even looked up.
func TestForgerDNSCannotMakeTemperror(t *testing.T) {
	_, ek := keys(t)
	for _, fault := range []string{"servfail", "timeout", "refused"} {
		t.Run(fault, func(t *testing.T) {
			w := newWorld(t)
			w.srv.AddTXT("sel._domainkey.evil.example", keyRecord(t, ek))
			for _, n := range []string{"_dmarc.evil.example", "_dmarc.sub.evil.example"} {
				switch fault {
				case "servfail":
					w.srv.ServFail(n)
				case "timeout":
					w.srv.Timeout(n)
				case "refused":
					w.srv.Refuse(n)
				}
			}
			e := w.engine(func(c *Config) { c.DMARC.OnTempError = "accept" })
			// SPF passes for evil.example.
			v := verify(t, e, "203.0.113.5", "x@evil.example", message("ceo@bank.example"))
			wantRefused(t, v)
			// DKIM passes for evil.example.
			v = verify(t, e, "203.0.113.5", "x@evil.example", sign(t, message("ceo@bank.example"), "evil.example", "sel", ek))
			wantRefused(t, v)
			if v.DKIM[0].Result != DKIMPass || v.DKIM[0].Domain != "evil.example" {
				t.Fatalf("DKIM %+v", v.DKIM)
			}
			if n := w.srv.QueryCount("_dmarc.evil.example", 16); n != 0 {
				t.Errorf("_dmarc.evil.example queried %d times", n)
			}
		})
	}
	// The honest variant: the author's own subdomain fails. That
	// identifier could align, so the answer matters: temperror.
	t.Run("author's subdomain", func(t *testing.T) {
		w := newWorld(t)
		w.srv.ServFail("_dmarc.bounce.bank.example")
		v := verify(t, w.engine(nil), "198.51.100.7", "b@bounce.bank.example", message("a@bank.example"))
		if v.DMARC.Result != "temperror" {
			t.Fatalf("dmarc %s (%s), want temperror", v.DMARC.Result, v.DMARC.Reason)
		}
	})
}

// Item 2: a PTR record listing ten names whose server never answers, and
// an SPF record that never answers, end at their share of the deadline;
// the DMARC discovery of bank.example is not starved.
func TestSlowForgerChecksDoNotStarveDMARC(t *testing.T) {
	w := newWorld(t)
	var ptr []string
	for i := range 10 {
		n := fmt.Sprintf("slow%d.evil.example", i)
		ptr = append(ptr, "7.113.0.203.in-addr.arpa. 300 IN PTR "+n+".")
		w.srv.Timeout(n)
	}
	if err := w.srv.AddZone(strings.Join(ptr, "\n") + "\nslowspf.example. 300 IN TXT \"v=spf1 include:hang.slowspf.example -all\"\n"); err != nil {
		t.Fatal(err)
	}
	w.srv.Timeout("hang.slowspf.example")
	e := w.engine(func(c *Config) { c.Limits.Deadline = 2 * time.Second })
	start := time.Now()
	v := verify(t, e, "203.0.113.7", "x@slowspf.example", message("ceo@bank.example"))
	if v.IPRev.Result != iprev.TempError || v.SPF.Result != spf.TempError {
		t.Errorf("iprev %s, spf %s: want both temperror", v.IPRev.Result, v.SPF.Result)
	}
	wantRefused(t, v)
	if time.Since(start) > 4*time.Second {
		t.Errorf("took %v", time.Since(start))
	}
	// A budget of a few lookups leaves every check its floor.
	e = w.engine(func(c *Config) { c.Limits.DNSQueries = 3 })
	v = verify(t, e, "203.0.113.5", "x@evil.example", message("ceo@bank.example"))
	wantRefused(t, v)
	if v.DNSQueries == 0 {
		t.Error("no lookups counted")
	}
}

func TestBudgetShares(t *testing.T) {
	for _, tc := range []struct {
		n     int
		frac  float64
		least int
		want  int
	}{
		{150, spfBudgetShare, 30, 60},
		{150, iprevBudgetShare, 11, 15},
		{50, iprevBudgetShare, 11, 11},
		{3, authorBudgetShare, 30, 30},
	} {
		if got := shareOf(tc.n, tc.frac, tc.least); got != tc.want {
			t.Errorf("shareOf(%d, %v, %d) = %d, want %d", tc.n, tc.frac, tc.least, got, tc.want)
		}
	}
}

// Items 3 and 6: whatever else the From fields hold, bank.example is
// evaluated, or the message is refused as malformed.
func TestFromHeaderTricks(t *testing.T) {
	w := newWorld(t)
	e := w.engine(func(c *Config) { c.DMARC.OnNoAuthor = "accept" })
	body := "To: user@mx.test\r\nSubject: Invoice\r\n\r\nPay now.\r\n"
	tests := []struct {
		name   string
		header string
		check  string // the check that refuses
	}{
		{"trailing semicolon", "From: ceo@bank.example;\r\n", "dmarc"},
		{"domain literal beside", "From: ceo@bank.example, x@[127.0.0.1]\r\n", "dmarc"},
		{"domain literal first", "From: x@[127.0.0.1], ceo@bank.example\r\n", "dmarc"},
		{"unterminated comment", "From: ceo@bank.example (Chief\r\n", "dmarc"},
		{"unterminated quote", "From: \"Chief <ceo@bank.example>\r\n", "dmarc"},
		{"empty domain beside", "From: ceo@bank.example, junk@\r\n", "dmarc"},
		{"second From without domain", "From: ceo@bank.example\r\nFrom: @\r\n", "dmarc"},
		{"second From without domain first", "From: @\r\nFrom: <ceo@bank.example>\r\n", "dmarc"},
		{"angle brackets and junk", "From: Chief <ceo@bank.example> junk\r\n", "dmarc"},
		{"group", "From: board: ceo@bank.example;\r\n", "dmarc"},
		{"bare CR", "From: ceo@bank.example\rx@evil.example\r\n", "header"},
		{"bare CR first", "From: x@evil.example\rceo@bank.example\r\n", "header"},
		{"NUL", "From: x@evil.example\x00ceo@bank.example\r\n", "header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := verify(t, e, "203.0.113.5", "x@evil.example", tc.header+body)
			wantRefused(t, v)
			if v.Reply.Check != tc.check {
				t.Fatalf("refused by %s (%s), want %s", v.Reply.Check, v.SMTPReply, tc.check)
			}
			if tc.check == "dmarc" && v.DMARC.FromDomain != "bank.example" {
				t.Fatalf("decided by %s", v.DMARC.FromDomain)
			}
		})
	}
	// The honest variant: a valid From with a display name holding an
	// address is the address, not the display name.
	v := verify(t, e, "203.0.113.5", "x@evil.example", "From: \"ceo@bank.example\" <x@evil.example>\r\n"+body)
	if v.Action != ActionAccept || len(v.AllDMARC) != 1 || v.DMARC.FromDomain != "evil.example" {
		t.Fatalf("quoted display name: %s %v", v.Action, v.AllDMARC)
	}
}

// Item 4: past max_author_domains the message cannot be verified: refused
// (or quarantined), never accepted as if the rest were not there.
func TestTooManyAuthorDomains(t *testing.T) {
	w := newWorld(t)
	from := "a@h1.example, a@h2.example, a@h3.example, a@h4.example, a@h5.example, ceo@bank.example"
	v := verify(t, w.engine(nil), "203.0.113.5", "x@evil.example", message(from))
	if v.Action != ActionReject || v.Reply.Code != 550 || v.Reply.Enhanced != "5.7.1" || !strings.Contains(v.SMTPReply, "6 domains") {
		t.Fatalf("refusal: %s %q", v.Action, v.SMTPReply)
	}
	v = verify(t, w.engine(func(c *Config) { c.DMARC.TooManyAuthors = "quarantine" }), "203.0.113.5", "x@evil.example", message(from))
	if v.Action != ActionQuarantine || v.Reply != nil {
		t.Fatalf("quarantine mode: %s %q", v.Action, v.SMTPReply)
	}
	// Five are verified: the honest variant.
	v = verify(t, w.engine(nil), "203.0.113.5", "x@evil.example", message("a@h1.example, a@h2.example, a@h3.example, a@h4.example, ceo@bank.example"))
	wantRefused(t, v)
	if len(v.AllDMARC) != 5 || v.Reply.Check != "dmarc" || v.DMARC.FromDomain != "bank.example" {
		t.Fatalf("five authors: %d results, decided by %s", len(v.AllDMARC), v.DMARC.FromDomain)
	}
}

// Item 5: a DKIM-Signature whose field name other parsers read
// differently cannot take the result of another signature. Each result
// belongs to the field it was verified from.
func TestDKIMResultsStayWithTheirSignature(t *testing.T) {
	_, ek := keys(t)
	w := newWorld(t)
	w.srv.AddTXT("sel._domainkey.evil.example", keyRecord(t, ek))
	junk := "v=1; a=ed25519-sha256; d=bank.example; s=sel; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
	// Odd names are not fields: not verified, not counted.
	for _, name := range []string{"\vDKIM-Signature: ", "DKIM-Signature\v: ", "DKIM-Signature\u00a0: ", "DKIM-Signature\x00: "} {
		signed := sign(t, message("ceo@bank.example"), "evil.example", "sel", ek)
		for _, at := range []string{"top", "bottom"} {
			msg := name + junk + signed
			if at == "bottom" {
				msg = strings.Replace(signed, "\r\n\r\n", "\r\n"+name+junk+"\r\n", 1)
			}
			v := verify(t, w.engine(nil), "203.0.113.5", "x@evil.example", msg)
			wantRefused(t, v)
			if len(v.DKIM) != 1 || v.DKIM[0].Domain != "evil.example" || v.DKIM[0].Result != DKIMPass {
				t.Errorf("%q at %s: %+v", name, at, v.DKIM)
			}
		}
	}
	// A real field claiming d=bank.example keeps its own failure; the
	// evil.example pass stays with evil.example. (Any signature of the
	// author's domain, valid or not, makes the refusal rule quarantine:
	// forwarding breaks signatures.)
	signed := sign(t, message("ceo@bank.example"), "evil.example", "sel", ek)
	v := verify(t, w.engine(nil), "203.0.113.5", "x@evil.example", "DKIM-Signature: "+junk+signed)
	if len(v.DKIM) != 2 || v.DKIM[0].Domain != "bank.example" || v.DKIM[0].Result == DKIMPass ||
		v.DKIM[1].Domain != "evil.example" || v.DKIM[1].Result != DKIMPass || v.Action != ActionQuarantine {
		t.Errorf("junk signature: %s %+v", v.Action, v.DKIM)
	}
}

// Item 11: however many signatures and whatever they hold, our A-R
// field stays far below the milter protocol's 64 KiB.
func TestAuthResultsAlwaysFits(t *testing.T) {
	w := newWorld(t)
	var sigs strings.Builder
	long := strings.Repeat("x", 300)
	for i := range 500 {
		fmt.Fprintf(&sigs, "DKIM-Signature: v=1; a=rsa-sha256; d=%s%d.evil.example; s=%s; h=from; bh=%s; b=%s\r\n", long[:60], i, long, long, long)
	}
	for _, max := range []int{5, 50} {
		e := w.engine(func(c *Config) { c.DKIMMaxSignatures = max })
		v := verify(t, e, "203.0.113.5", "x@evil.example", sigs.String()+message("a@none.example"))
		folded := authres.Fold("mx.test", v.Results, "\n")
		if len(folded) > 32<<10 || len(v.DKIM) != 500 {
			t.Fatalf("max %d: A-R of %d bytes, %d DKIM results", max, len(folded), len(v.DKIM))
		}
		if !strings.Contains(v.AuthenticationResults, fmt.Sprintf("(%d more signatures not checked)", 500-max)) {
			t.Errorf("no summary: %.300s", v.AuthenticationResults)
		}
	}
}
