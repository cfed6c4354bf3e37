package mailauth

import (
	"context"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

func TestWalkNames(t *testing.T) {
	// RFC 9989 4.10's example: eight queries for a long name.
	got := walkNames("a.b.c.d.e.f.g.h.i.j.mail.example.com")
	want := []string{"a.b.c.d.e.f.g.h.i.j.mail.example.com", "g.h.i.j.mail.example.com", "h.i.j.mail.example.com",
		"i.j.mail.example.com", "j.mail.example.com", "mail.example.com", "example.com", "com"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if got := walkNames("a.mail.example.com"); len(got) != 4 {
		t.Fatalf("short name: %v", got)
	}
	for _, n := range []string{"x", "a.b", "1.2.3.4.5.6.7.8", "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16"} {
		if len(walkNames(n)) > maxWalkQueries {
			t.Errorf("%s: %d queries", n, len(walkNames(n)))
		}
	}
}

func walkDNS(t *testing.T, zone string) (*dmarcDNS, *dnstest.Server) {
	t.Helper()
	srv := dnstest.New(t, zone)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	return newDMARCDNS(res, DiscoveryTreeWalk), srv
}

func TestTreeWalkAppendixB(t *testing.T) {
	ctx := context.Background()
	t.Run("B.4.1 simple", func(t *testing.T) {
		d, srv := walkDNS(t, `
_dmarc.example.com. 300 IN TXT "v=DMARC1; p=reject"
_dmarc.signing.example.com. 300 IN TXT "v=DMARC1; p=none"
`)
		pf, err := d.discover(ctx, "example.com")
		if err != nil || pf.domain != "example.com" || pf.org != "example.com" {
			t.Fatalf("discover: %+v %v", pf, err)
		}
		if srv.QueryCount("_dmarc.com", dns.TypeTXT) != 1 {
			t.Error("_dmarc.com not queried")
		}
		if ok, err := alignedTo(ctx, d, 'r', "example.com", "signing.example.com"); !ok || err != nil {
			t.Errorf("DKIM signing.example.com not aligned: %v", err)
		}
		if ok, _ := alignedTo(ctx, d, 's', "example.com", "signing.example.com"); ok {
			t.Error("strict alignment of a subdomain")
		}
	})
	t.Run("B.4.2 deep", func(t *testing.T) {
		d, srv := walkDNS(t, `
_dmarc.example.com. 300 IN TXT "v=DMARC1; p=quarantine"
_dmarc.signing.example.com. 300 IN TXT "v=DMARC1; p=none"
`)
		author := "a.b.c.d.e.f.g.h.i.j.k.example.com"
		pf, err := d.discover(ctx, author)
		if err != nil || pf.domain != "example.com" || pf.org != "example.com" {
			t.Fatalf("discover: %+v %v", pf, err)
		}
		for _, n := range []string{author, "g.h.i.j.k.example.com", "h.i.j.k.example.com", "i.j.k.example.com",
			"j.k.example.com", "k.example.com", "example.com", "com"} {
			if srv.QueryCount("_dmarc."+n, dns.TypeTXT) != 1 {
				t.Errorf("_dmarc.%s not queried once", n)
			}
		}
		if srv.QueryCount("_dmarc.b.c.d.e.f.g.h.i.j.k.example.com", dns.TypeTXT) != 0 {
			t.Error("intermediate name queried")
		}
		if srv.Queries() != 8 {
			t.Errorf("%d queries, want 8", srv.Queries())
		}
		for _, id := range []string{"example.com", "signing.example.com"} {
			if ok, err := alignedTo(ctx, d, 'r', author, id); !ok || err != nil {
				t.Errorf("%s not aligned: %v", id, err)
			}
		}
	})
	t.Run("B.4.3 PSD", func(t *testing.T) {
		d, _ := walkDNS(t, `
_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject; psd=y"
_dmarc.giant.bank.example. 300 IN TXT "v=DMARC1; p=quarantine"
`)
		pf, err := d.discover(ctx, "giant.bank.example")
		if err != nil || pf.domain != "giant.bank.example" || pf.org != "giant.bank.example" {
			t.Fatalf("discover: %+v %v", pf, err)
		}
		if ok, _ := alignedTo(ctx, d, 'r', "giant.bank.example", "mail.giant.bank.example"); !ok {
			t.Error("SPF mail.giant.bank.example not aligned")
		}
		if org, _ := d.OrgDomain(ctx, "mail.mega.bank.example"); org != "mega.bank.example" {
			t.Errorf("org of mail.mega.bank.example = %s", org)
		}
		if ok, _ := alignedTo(ctx, d, 'r', "giant.bank.example", "mail.mega.bank.example"); ok {
			t.Error("DKIM mail.mega.bank.example aligned with giant.bank.example")
		}
	})
}

// The three examples closing RFC 9989 4.10.2, and the psd tag.
func TestOrgDomainSelection(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name, zone, start, org string
	}{
		{"fewest labels", `
_dmarc.mail.example.com. 300 IN TXT "v=DMARC1; p=none"
_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none"`, "a.mail.example.com", "example.com"},
		{"psd=n stops", `
_dmarc.mail.example.com. 300 IN TXT "v=DMARC1; p=none; psd=n"
_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none"`, "a.mail.example.com", "mail.example.com"},
		{"psd=y at the top", `
_dmarc.com. 300 IN TXT "v=DMARC1; p=none; psd=y"`, "a.mail.example.com", "example.com"},
		{"no record at all", ``, "a.mail.example.com", "a.mail.example.com"},
		{"several records at a name are discarded, the walk goes on", `
_dmarc.mail.example.com. 300 IN TXT "v=DMARC1; p=none"
_dmarc.mail.example.com. 300 IN TXT "v=DMARC1; p=reject"
_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none; psd=n"`, "a.mail.example.com", "example.com"},
		{"non-DMARC TXT ignored", `
_dmarc.example.com. 300 IN TXT "google-site-verification=abc"
_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none"`, "x.example.com", "example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := walkDNS(t, tc.zone)
			org, err := d.OrgDomain(ctx, tc.start)
			if err != nil || org != tc.org {
				t.Fatalf("OrgDomain(%s) = %s, %v; want %s", tc.start, org, err, tc.org)
			}
		})
	}
}

func TestPSLMode(t *testing.T) {
	srv := dnstest.New(t, `
_dmarc.example.co.uk. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.multi.example.org. 300 IN TXT "v=DMARC1; p=reject"
_dmarc.multi.example.org. 300 IN TXT "v=DMARC1; p=none"
_dmarc.example.org. 300 IN TXT "v=DMARC1; p=quarantine"
`)
	res, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	d := newDMARCDNS(res, DiscoveryPSL)
	ctx := context.Background()
	pf, err := d.discover(ctx, "mail.example.co.uk")
	if err != nil || pf.domain != "example.co.uk" || pf.org != "example.co.uk" {
		t.Fatalf("discover: %+v %v", pf, err)
	}
	// RFC 7489: several records at _dmarc.<author> mean no policy, even
	// though the organizational domain has one.
	pf, err = d.discover(ctx, "multi.example.org")
	if err != nil || pf.rec != nil || !strings.Contains(pf.why, "several") {
		t.Fatalf("multiple records: %+v %v", pf, err)
	}
	if org, _ := d.OrgDomain(ctx, "a.b.EXAMPLE.co.uk"); org != "example.co.uk" {
		t.Fatalf("PSL org domain %q", org)
	}
}

// RFC 9989 Appendix B.1: identifier alignment examples (SPF and DKIM
// alike: the identifier is the MAIL FROM domain or d=).
func TestAlignmentAppendixB1(t *testing.T) {
	d, _ := walkDNS(t, `_dmarc.example.com. 300 IN TXT "v=DMARC1; p=none"`)
	ctx := context.Background()
	tests := []struct {
		name            string
		author, id      string
		strict, relaxed bool
	}{
		{"B.1.1 ex. 1 / B.1.2 ex. 1: identical", "example.com", "example.com", true, true},
		{"B.1.1 ex. 2: MAIL FROM a child of the author", "example.com", "child.example.com", false, true},
		{"B.1.1 ex. 3: unrelated", "child.example.com", "example.net", false, false},
		{"B.1.2 ex. 2: d= a parent of the author", "child.example.com", "example.com", false, true},
		{"B.1.2 ex. 3: unrelated d=", "child.example.com", "example.net", false, false},
		{"case does not matter", "example.com", "EXAMPLE.com", true, true},
	}
	for _, tc := range tests {
		s, err := alignedTo(ctx, d, 's', tc.author, tc.id)
		if err != nil || s != tc.strict {
			t.Errorf("%s: strict %v %v", tc.name, s, err)
		}
		r, err := alignedTo(ctx, d, 'r', tc.author, tc.id)
		if err != nil || r != tc.relaxed {
			t.Errorf("%s: relaxed %v %v", tc.name, r, err)
		}
	}
}

// alignedTo discovers the author's Organizational Domain, as the engine
// does first, and then checks alignment.
func alignedTo(ctx context.Context, d *dmarcDNS, mode byte, author, id string) (bool, error) {
	pf, err := d.discover(ctx, author)
	if err != nil {
		return false, err
	}
	return d.aligned(ctx, mode, author, pf.org, id)
}
