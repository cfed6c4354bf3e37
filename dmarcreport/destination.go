package dmarcreport

import (
	"context"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"

	"github.com/wehr/wehr/mailauth"
)

// Destination is a verified place to send a report.
type Destination struct {
	Address string // the mailbox
	// MaxSize is the largest report the destination takes (the "!10m"
	// of the URI), 0 for no limit.
	MaxSize int64
}

// Skipped is a rua URI that gets no report, and why.
type Skipped struct {
	URI, Why string
}

// TXTResolver is what verification asks of DNS.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// ParseURI reads a rua URI: mailto:ADDRESS, optionally !SIZE with k, m,
// g or t (RFC 9989 4.7).
func ParseURI(uri string) (Destination, error) {
	u := strings.TrimSpace(uri)
	if len(u) < 7 || !strings.EqualFold(u[:7], "mailto:") {
		return Destination{}, fmt.Errorf("%q is not a mailto: URI", uri)
	}
	u = u[7:]
	var size int64
	if i := strings.LastIndexByte(u, '!'); i >= 0 {
		n, unit := u[i+1:], int64(1)
		if n != "" {
			switch n[len(n)-1] {
			case 'k', 'K':
				unit, n = 1<<10, n[:len(n)-1]
			case 'm', 'M':
				unit, n = 1<<20, n[:len(n)-1]
			case 'g', 'G':
				unit, n = 1<<30, n[:len(n)-1]
			case 't', 'T':
				unit, n = 1<<40, n[:len(n)-1]
			}
		}
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 0 || v > 1<<20 {
			return Destination{}, fmt.Errorf("%q: bad size limit", uri)
		}
		size, u = v*unit, u[:i]
	}
	addr, err := url.PathUnescape(u)
	if err != nil {
		return Destination{}, fmt.Errorf("%q: %w", uri, err)
	}
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Name != "" || strings.ContainsAny(a.Address, "\r\n<>,") {
		return Destination{}, fmt.Errorf("%q is not one mailbox", uri)
	}
	return Destination{Address: a.Address, MaxSize: size}, nil
}

func hostOf(addr string) string {
	return strings.ToLower(strings.TrimSuffix(addr[strings.LastIndexByte(addr, '@')+1:], "."))
}

// orgDomain is a domain's registrable part by the public suffix list:
// two domains with the same one belong to the same owner.
func orgDomain(d string) string {
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

// Destinations returns where policyDomain's report may go: each rua
// URI whose host is in the policy domain's organisation, and each other
// one whose host publishes <policy-domain>._report._dmarc.<host> (RFC
// 9990 "Verifying External Destinations"; its own rua, in the same
// host, replaces the original). A temporary DNS error is returned as an
// error, so that the report waits; everything else that fails is
// skipped with the reason.
func Destinations(ctx context.Context, res TXTResolver, policyDomain string, uris []string) ([]Destination, []Skipped, error) {
	var out []Destination
	var skipped []Skipped
	seen := map[string]bool{}
	add := func(d Destination) {
		if !seen[strings.ToLower(d.Address)] {
			seen[strings.ToLower(d.Address)] = true
			out = append(out, d)
		}
	}
	pd, err := idna.Lookup.ToASCII(strings.ToLower(policyDomain))
	if err != nil {
		return nil, nil, fmt.Errorf("dmarcreport: policy domain %q: %w", policyDomain, err)
	}
	for _, uri := range uris {
		d, err := ParseURI(uri)
		if err != nil {
			skipped = append(skipped, Skipped{uri, err.Error()})
			continue
		}
		host, err := idna.Lookup.ToASCII(hostOf(d.Address))
		if err != nil {
			skipped = append(skipped, Skipped{uri, "the host is not a domain name"})
			continue
		}
		if orgDomain(host) == orgDomain(pd) {
			add(d)
			continue
		}
		name := pd + "._report._dmarc." + host
		if len(name) > 253 {
			skipped = append(skipped, Skipped{uri, "the verification name is longer than DNS allows"})
			continue
		}
		txts, err := res.LookupTXT(ctx, name)
		if err != nil {
			if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
				skipped = append(skipped, Skipped{uri, "external destination not authorised: no " + name})
				continue
			}
			return nil, nil, fmt.Errorf("dmarcreport: verify %s: %w", name, err)
		}
		var rec *mailauth.DMARCRecord
		for _, t := range txts {
			if r, err := mailauth.ParseDMARCRecord(t); err == nil {
				rec = r
				break
			}
		}
		if rec == nil {
			skipped = append(skipped, Skipped{uri, "external destination not authorised: no v=DMARC1 record at " + name})
			continue
		}
		if len(rec.RUA) == 0 {
			add(d)
			continue
		}
		// The destination may redirect within its own host, never away.
		for _, o := range rec.RUA {
			od, err := ParseURI(o)
			if err != nil || hostOf(od.Address) != hostOf(d.Address) {
				skipped = append(skipped, Skipped{uri, "the authorising record at " + name + " points elsewhere: " + o})
				continue
			}
			add(od)
		}
	}
	return out, skipped, nil
}
