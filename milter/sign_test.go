package milter

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/sendermap"
)

func TestOutboundSigning(t *testing.T) {
	dir := t.TempDir()
	store := &dkimkeys.Store{Dir: filepath.Join(dir, "keys")}
	now := time.Now()
	rk, err := store.Generate("example.org", "2026a-rsa", dkimkeys.RSA, dkimkeys.Active, now)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := store.Generate("example.org", "2026a-ed", dkimkeys.Ed25519, dkimkeys.Active, now)
	if err != nil {
		t.Fatal(err)
	}
	set, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	mapPath := filepath.Join(dir, "senders")
	os.WriteFile(mapPath, []byte("alice @example.org\n127.0.0.0/8 web@news.example.org\n"), 0o644) //nolint:errcheck
	senders, err := sendermap.NewHolder(mapPath)
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t, "")
	srv.AddTXT(rk.RecordName(), rk.Record())
	srv.AddTXT(ek.RecordName(), ek.Record())
	res, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	engine := mailauth.NewEngine(res, mailauth.Config{AuthservID: "mx.test"})

	c, _ := start(t, func(c *Config) { c.Keys = set; c.Senders = senders }, engine)
	headers := [][2]string{{"From", " Alice <alice@example.org>"}, {"To", " bob@example.net"}, {"Subject", " hello"}, {"Date", " Thu, 26 Nov 2026 10:00:00 +0000"}}
	body := "Hi Bob,\nsee you.\n"
	auth := map[milter.MacroName]string{milter.MacroAuthAuthen: "alice"}

	mods, act := send(t, c, msg{ip: "203.0.113.9", helo: "laptop", from: "alice@example.org", macros: auth, headers: headers, body: body})
	if act.Type != milter.ActionAccept || len(mods) != 2 {
		t.Fatalf("%+v %+v", act, mods)
	}
	// Each insert goes to the top, so the last one sent ends up first:
	// RSA on top, then Ed25519. Values start with a space (leading-space
	// handling) and fold with LF.
	top, second := mods[1], mods[0]
	if !strings.Contains(top.HeaderValue, "a=rsa-sha256") || !strings.Contains(second.HeaderValue, "a=ed25519-sha256") ||
		!strings.HasPrefix(top.HeaderValue, " ") || strings.Contains(top.HeaderValue, "\r") || top.HeaderIndex != 0 || second.HeaderIndex != 0 {
		t.Fatalf("signatures %q", mods)
	}
	// The message as delivered verifies.
	var delivered strings.Builder
	for _, m := range []milter.ModifyAction{top, second} {
		delivered.WriteString("DKIM-Signature:" + strings.ReplaceAll(m.HeaderValue, "\n", "\r\n") + "\r\n")
	}
	for _, h := range headers {
		delivered.WriteString(h[0] + ":" + h[1] + "\r\n")
	}
	delivered.WriteString("\r\n" + strings.ReplaceAll(body, "\n", "\r\n"))
	v, err := engine.Verify(context.Background(), mailauth.Envelope{}, bytes.NewReader([]byte(delivered.String())))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.DKIM) != 2 || v.DKIM[0].Result != "pass" || v.DKIM[1].Result != "pass" || v.DKIM[0].Algorithm != "rsa-sha256" || v.DMARC.FromDomain != "example.org" {
		t.Fatalf("verification %+v", v.DKIM)
	}

	// A subdomain From is signed with the parent's keys: d=example.org.
	sub := [][2]string{{"From", " web@news.example.org"}, {"Subject", " news"}}
	mods, _ = send(t, c, msg{ip: "127.0.0.1", helo: "web", from: "web@news.example.org", headers: sub, body: body})
	if len(mods) != 2 || !strings.Contains(mods[0].HeaderValue, "d=example.org") {
		t.Fatalf("subdomain: %+v", mods)
	}

	// alice may not use another customer's domain: sent unsigned.
	other := [][2]string{{"From", " ceo@bank.example"}, {"Subject", " pay"}}
	mods, act = send(t, c, msg{ip: "203.0.113.9", helo: "laptop", from: "alice@example.org", macros: auth, headers: other, body: body})
	if act.Type != milter.ActionAccept || len(mods) != 0 {
		t.Fatalf("foreign From: %+v %+v", act, mods)
	}
	// ... or refused, if configured.
	c2, _ := start(t, func(c *Config) { c.Keys = set; c.Senders = senders; c.RefuseUnauthorized = true }, engine)
	_, act = send(t, c2, msg{ip: "203.0.113.9", helo: "laptop", from: "alice@example.org", macros: auth, headers: other, body: body})
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 553 || !strings.Contains(act.SMTPReply, "5.7.1 user alice may not send as <ceo@bank.example>") {
		t.Fatalf("refused: %+v", act)
	}
	// An unauthenticated trusted client outside its network entry: unsigned.
	mods, _ = send(t, c, msg{ip: "127.0.0.1", helo: "web", from: "x@example.org", headers: [][2]string{{"From", " x@example.org"}}, body: body})
	if len(mods) != 0 {
		t.Fatalf("network not allowed example.org: %+v", mods)
	}
}
