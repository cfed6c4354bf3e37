package arc

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

const engineZone = `
bank.example.          300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.bank.example.   300 IN TXT "v=DMARC1; p=reject"
fwd.example.           300 IN TXT "v=spf1 ip4:192.0.2.2 -all"
2.2.0.192.in-addr.arpa. 300 IN PTR mx.fwd.example.
mx.fwd.example.        300 IN A   192.0.2.2
evil.example.          300 IN TXT "v=spf1 ip4:192.0.2.2 -all"
`

type engineWorld struct {
	res       *resolver.Resolver
	fwdKey    ed25519.PrivateKey
	forgerKey ed25519.PrivateKey
}

func newEngineWorld(t *testing.T) *engineWorld {
	srv := dnstest.New(t, engineZone)
	w := &engineWorld{}
	_, w.fwdKey, _ = ed25519.GenerateKey(rand.Reader)
	_, w.forgerKey, _ = ed25519.GenerateKey(rand.Reader)
	srv.AddTXT("arc._domainkey.fwd.example", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(w.fwdKey.Public().(ed25519.PublicKey)))
	srv.AddTXT("arc._domainkey.evil.example", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(w.forgerKey.Public().(ed25519.PublicKey)))
	var err error
	w.res, err = resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1, CacheSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

const bankMessage = "From: CEO <ceo@bank.example>\r\nTo: staff@example.test\r\nSubject: [staff] quarterly figures\r\n" +
	"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <q@bank.example>\r\n\r\nThe figures.\r\n"

// seal adds an ARC set of domain (key) to msg with the given results.
func seal(t *testing.T, res mailauth.Resolver, msg, domain string, key ed25519.PrivateKey, results string) string {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(msg))
	h, err := mailauth.ReadHeader(br, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Seal(context.Background(), res, h, strings.NewReader(msg[h.Size:]), SealOptions{Domain: domain, Selector: "arc", Key: key,
		AuthservID: "mx." + domain, Results: results, Headers: []string{"from", "to", "subject", "date", "message-id"}, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return "ARC-Seal: " + s.Seal + "\r\nARC-Message-Signature: " + s.AMS + "\r\nARC-Authentication-Results: " + s.AAR + "\r\n" + msg
}

func (w *engineWorld) verdict(t *testing.T, sealers []string, msg string) *mailauth.Verdict {
	t.Helper()
	cfg := mailauth.Config{AuthservID: "mx.example.test", ARC: Verifier{}}
	cfg.DMARC = mailauth.DefaultDMARC()
	cfg.DMARC.TrustedForwarders.ARCSealers = sealers
	e := mailauth.NewEngine(w.res, cfg)
	v, err := e.Verify(context.Background(), mailauth.Envelope{ClientIP: net.ParseIP("192.0.2.2"), Helo: "mx.fwd.example",
		MailFrom: "staff-bounces@fwd.example", RcptTo: []string{"alice@example.test"}}, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A trusted forwarder's passing chain, whose sealed results say the
// bank passed, overrides the DMARC failure its forwarding caused; every
// hostile variant leaves the refusal as it was.
func TestTrustedSealer(t *testing.T) {
	w := newEngineWorld(t)
	vouch := "dkim=pass header.d=bank.example header.s=s1; dmarc=pass header.from=bank.example"
	good := seal(t, w.res, bankMessage, "fwd.example", w.fwdKey, vouch)
	tests := []struct {
		name        string
		sealers     []string
		msg         string
		arc         mailauth.ARCStatus
		disposition string
		overrides   string
	}{
		{"trusted sealer vouches", []string{"fwd.example"}, good, mailauth.ARCPass, "none", "trusted_forwarder"},
		{"trusted by parent domain", []string{"example"}, good, mailauth.ARCPass, "none", "trusted_forwarder"},
		{"no sealer trusted", nil, good, mailauth.ARCPass, "reject", ""},
		{"another sealer trusted", []string{"lists.example.net"}, good, mailauth.ARCPass, "reject", ""},
		{"the sealer saw a failure", []string{"fwd.example"},
			seal(t, w.res, bankMessage, "fwd.example", w.fwdKey, "dkim=fail header.d=bank.example; dmarc=fail header.from=bank.example"), mailauth.ARCPass, "reject", ""},
		{"the sealer vouches for another domain", []string{"fwd.example"},
			seal(t, w.res, bankMessage, "fwd.example", w.fwdKey, "dmarc=pass header.from=evil.example; dkim=pass header.d=evil.example"), mailauth.ARCPass, "reject", ""},
		{"modified after sealing", []string{"fwd.example"},
			strings.Replace(good, "The figures.", "Pay this invoice.", 1), mailauth.ARCFail, "reject", ""},
		{"From changed after sealing", []string{"fwd.example"},
			strings.Replace(good, "From: CEO <ceo@bank.example>", "From: CEO <ceo@bank.example>, x@evil.example", 1), mailauth.ARCFail, "reject", ""},
		// A forger's seal naming the trusted domain, signed with his key:
		// the key in DNS is the forwarder's, so the chain fails.
		{"forged seal in the trusted domain", []string{"fwd.example"},
			seal(t, w.res, bankMessage, "fwd.example", w.forgerKey, vouch), mailauth.ARCFail, "reject", ""},
		// The forger's own, valid chain on top of the trusted one:
		// the newest sealer is his.
		{"forger seals on top", []string{"fwd.example"},
			seal(t, w.res, good, "evil.example", w.forgerKey, vouch), mailauth.ARCPass, "reject", ""},
		{"no chain", []string{"fwd.example"}, bankMessage, mailauth.ARCNone, "reject", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := w.verdict(t, tc.sealers, tc.msg)
			if v.ARC.Result != tc.arc || v.DMARC.Disposition != tc.disposition || strings.Join(v.DMARC.Overrides, ",") != tc.overrides {
				t.Fatalf("arc %s (%s), disposition %s, overrides %v; want %s %s %q\n%s", v.ARC.Result, v.ARC.Error,
					v.DMARC.Disposition, v.DMARC.Overrides, tc.arc, tc.disposition, tc.overrides, v.AuthenticationResults)
			}
		})
	}
	v := w.verdict(t, []string{"fwd.example"}, good)
	if !strings.Contains(v.AuthenticationResults, "arc=pass (1 sets, sealed by fwd.example) smtp.remote-ip=192.0.2.2 header.oldest-pass=0") {
		t.Errorf("A-R %s", v.AuthenticationResults)
	}
	if !strings.Contains(v.DMARC.Reason, "trusted ARC sealer fwd.example saw dkim=pass for bank.example") {
		t.Errorf("reason %q", v.DMARC.Reason)
	}
}
