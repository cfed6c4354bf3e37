package milter

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store"
)

// A DMARC pass is recorded for the client's /24; a later spoof of the
// same domain from elsewhere meets the no-history booster.
func TestPassHistoryRecorded(t *testing.T) {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := store.NewPassHistory(st, time.Hour)
	srv := dnstest.New(t, zone+`
_dmarc.soft.example. 300 IN TXT "v=DMARC1; p=reject"
soft.example.        300 IN TXT "v=spf1 ip4:198.51.100.0/24 ~all"
`)
	res, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
	engine := mailauth.NewEngine(res, mailauth.Config{AuthservID: "mx.test", History: h})
	c, _ := start(t, func(c *Config) { c.History = h }, engine)

	_, act := send(t, c, msg{ip: "198.51.100.7", helo: "mail.soft.example", from: "a@soft.example",
		headers: [][2]string{{"From", " a@soft.example"}}, body: "hi\n"})
	if act.Type != milter.ActionAccept {
		t.Fatalf("passing message: %+v", act)
	}
	ctx := context.Background()
	if ok, err := h.Passed(ctx, "soft.example", net.ParseIP("198.51.100.99")); !ok || err != nil {
		t.Fatalf("pass not recorded for the /24: %v %v", ok, err)
	}
	if ok, _ := h.Passed(ctx, "soft.example", net.ParseIP("203.0.113.5")); ok {
		t.Fatal("another network counted as having history")
	}
	// The spoof from a network without history is refused.
	_, act = send(t, c, msg{ip: "203.0.113.5", helo: "mail.evil.example", from: "x@evil.example",
		headers: [][2]string{{"From", " ceo@soft.example"}}, body: "pay\n"})
	if act.SMTPCode != 550 {
		t.Fatalf("spoof without history: %+v", act)
	}
}
