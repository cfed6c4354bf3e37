package resolver

import (
	"context"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wehr/wehr/resolver/dnstest"
)

// RFC 8767 serve-stale: while the servers fail, an expired answer is
// given for dns.serve_stale past its TTL, and never after; a server
// that answers (even "no such name") is always believed; 0 turns it off.
func TestServeStale(t *testing.T) {
	srv := dnstest.New(t, `
_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject"
gone.example.        300 IN TXT "v=spf1 -all"
`)
	r, clk := newResolver(t, srv, func(c *Config) { c.ServeStale = time.Hour })
	ctx := context.Background()
	if _, err := r.LookupTXT(ctx, "_dmarc.bank.example"); err != nil {
		t.Fatal(err)
	}
	srv.ServFail("_dmarc.bank.example")
	clk.add(301 * time.Second)
	txt, err := r.LookupTXT(ctx, "_dmarc.bank.example")
	if err != nil || len(txt) != 1 || txt[0] != "v=DMARC1; p=reject" {
		t.Fatalf("stale answer during SERVFAIL: %v %v", txt, err)
	}
	if s := r.Stats(); s.Stale != 1 || s.Failures != 0 {
		t.Errorf("stats %+v", s)
	}
	// Past the bound: the failure is the answer.
	clk.add(time.Hour)
	if _, err := r.LookupTXT(ctx, "_dmarc.bank.example"); err == nil || !dnsErr(t, err).IsTemporary {
		t.Fatalf("served stale past dns.serve_stale: %v", err)
	}

	// A server that says the name is gone is believed at once: the old
	// answer is not served in its place.
	if _, err := r.LookupTXT(ctx, "gone.example"); err != nil {
		t.Fatal(err)
	}
	srv.Remove("gone.example", dns.TypeTXT)
	clk.add(301 * time.Second)
	if _, err := r.LookupTXT(ctx, "gone.example"); err == nil || !dnsErr(t, err).IsNotFound {
		t.Fatalf("a removed record served stale: %v", err)
	}

	// Off.
	srv2 := dnstest.New(t, `_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject"`)
	r2, clk2 := newResolver(t, srv2, nil)
	if _, err := r2.LookupTXT(ctx, "_dmarc.bank.example"); err != nil {
		t.Fatal(err)
	}
	srv2.ServFail("_dmarc.bank.example")
	clk2.add(301 * time.Second)
	if _, err := r2.LookupTXT(ctx, "_dmarc.bank.example"); err == nil {
		t.Fatal("served stale with serve_stale 0")
	}
}
