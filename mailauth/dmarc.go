package mailauth

import (
	"context"
	"net"
	"strings"
	"sync"

	"golang.org/x/net/publicsuffix"
)

// How the Organizational Domain and the policy are found.
const (
	DiscoveryTreeWalk = "treewalk" // RFC 9989 4.10
	DiscoveryPSL      = "psl"      // RFC 7489 3.2, 6.6.3: the public suffix list
)

// maxWalkQueries is the most queries one tree walk makes (RFC 9989 4.10).
const maxWalkQueries = 8

// dmarcDNS finds DMARC records, Organizational Domains and policies for
// one message. Lookups go through res; what was found (never a failure)
// is remembered in a cache that views made by with share, so that the
// author's walk and the identifiers' walks share queries while each
// check spends its own DNS budget.
type dmarcDNS struct {
	res Resolver
	psl bool
	c   *dmarcCache
}

// dmarcCache holds one message's lookups. A message has a few authors
// and identifiers, and the DNS budget bounds the names: lists searched
// in order cost less than maps made for every message.
type dmarcCache struct {
	mu    sync.Mutex
	at    []namedRecord
	walks []namedWalk
}

type namedRecord struct {
	domain string
	r      recordAt
}

type namedWalk struct {
	start string
	w     []found
}

func newDMARCDNS(res Resolver, discovery string) *dmarcDNS {
	return &dmarcDNS{res: res, psl: discovery == DiscoveryPSL, c: &dmarcCache{}}
}

// cachedAt returns what _dmarc.<domain> held, if it was looked up.
func (c *dmarcCache) cachedAt(domain string) (recordAt, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.at {
		if e.domain == domain {
			return e.r, true
		}
	}
	return recordAt{}, false
}

// cachedWalk returns the walk from start, if it was made.
func (c *dmarcCache) cachedWalk(start string) ([]found, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.walks {
		if e.start == start {
			return e.w, true
		}
	}
	return nil, false
}

// with returns a view of d that looks up through res.
func (d *dmarcDNS) with(res Resolver) *dmarcDNS {
	return &dmarcDNS{res: res, psl: d.psl, c: d.c}
}

// recordAt is what _dmarc.<domain> holds.
type recordAt struct {
	rec      *DMARCRecord // nil: no (single) DMARC record
	multiple bool         // several DMARC records: all discarded
	err      error        // temporary DNS failure
}

// found is a DMARC record found on a walk.
type found struct {
	domain string
	rec    *DMARCRecord
}

func (d *dmarcDNS) recordAt(ctx context.Context, domain string) recordAt {
	r, ok := d.c.cachedAt(domain)
	if ok {
		return r
	}
	txts, err := d.res.LookupTXT(ctx, "_dmarc."+domain)
	switch {
	case err != nil:
		if de, ok := err.(*net.DNSError); !ok || !de.IsNotFound {
			r.err = err
		}
	default:
		var recs []*DMARCRecord
		for _, t := range txts {
			if rec, err := ParseDMARCRecord(t); err == nil {
				recs = append(recs, rec)
			}
		}
		switch len(recs) {
		case 0:
		case 1:
			r.rec = recs[0]
		default:
			// RFC 9989 4.10 steps 2 and 6, RFC 7489 6.6.3: several
			// records at one name are all discarded.
			r.multiple = true
		}
	}
	if r.err != nil {
		// A failure is not remembered: it may be this view's budget
		// or deadline, which another check does not share.
		return r
	}
	d.c.mu.Lock()
	d.c.at = append(d.c.at, namedRecord{domain, r})
	d.c.mu.Unlock()
	return r
}

// walkNames lists the names a tree walk from start queries (RFC 9989
// 4.10): start, then, for a start of more than eight labels, the name
// shortened to seven labels, then one label less each step.
func walkNames(start string) []string {
	labels := strings.Split(start, ".")
	names := []string{start}
	n := len(labels) - 1
	if n > maxWalkQueries-1 {
		n = maxWalkQueries - 1
	}
	for ; n >= 1; n-- {
		names = append(names, strings.Join(labels[len(labels)-n:], "."))
	}
	return names
}

// walk runs the DNS Tree Walk from start and returns the records found,
// longest name first, stopping at a record with psd=y or psd=n.
func (d *dmarcDNS) walk(ctx context.Context, start string) ([]found, error) {
	w, ok := d.c.cachedWalk(start)
	if ok {
		return w, nil
	}
	w = []found{}
	for _, name := range walkNames(start) {
		r := d.recordAt(ctx, name)
		if r.err != nil {
			return nil, r.err
		}
		if r.rec == nil {
			continue
		}
		w = append(w, found{domain: name, rec: r.rec})
		if r.rec.PSD == 'y' || r.rec.PSD == 'n' {
			break
		}
	}
	d.c.mu.Lock()
	d.c.walks = append(d.c.walks, namedWalk{start, w})
	d.c.mu.Unlock()
	return w, nil
}

// selectOrg picks the Organizational Domain from a walk's records (RFC
// 9989 4.10.2).
func selectOrg(start string, w []found) string {
	for _, f := range w {
		if f.rec.PSD == 'n' {
			return f.domain
		}
		if f.rec.PSD == 'y' && f.domain != start {
			return childOf(start, f.domain)
		}
	}
	if len(w) > 0 {
		return w[len(w)-1].domain // the fewest labels
	}
	return start
}

// childOf returns the name one label below parent on the way to start.
func childOf(start, parent string) string {
	rest := strings.TrimSuffix(start, "."+parent)
	if i := strings.LastIndexByte(rest, '.'); i >= 0 {
		rest = rest[i+1:]
	}
	return rest + "." + parent
}

// OrgDomain returns the Organizational Domain of domain.
func (d *dmarcDNS) OrgDomain(ctx context.Context, domain string) (string, error) {
	if d.psl {
		return pslOrgDomain(domain), nil
	}
	w, err := d.walk(ctx, domain)
	if err != nil {
		return "", err
	}
	return selectOrg(domain, w), nil
}

// pslOrgDomain is the RFC 7489 Organizational Domain: the public suffix
// plus one label; a public suffix itself is its own.
func pslOrgDomain(domain string) string {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// aligned reports whether identifier id aligns with the author domain
// under mode 'r' or 's' (RFC 9989 3.2.10, 4.10.2); authorOrg is the
// author's Organizational Domain, as policy discovery found it.
//
// Relaxed alignment is the equality of the two Organizational Domains,
// and a name's Organizational Domain is the name itself or one of its
// ancestors. So unless authorOrg is id or an ancestor of id, they cannot
// be equal: the identifier is not aligned, and nothing is looked up. The
// identifier's DNS is the sender's to choose (a forger's MAIL FROM domain
// answering SERVFAIL); a failure there must never turn a forgery into a
// temperror.
func (d *dmarcDNS) aligned(ctx context.Context, mode byte, author, authorOrg, id string) (bool, error) {
	id = strings.ToLower(strings.TrimSuffix(id, "."))
	if id == author {
		return true, nil
	}
	if mode == 's' || id == "" {
		return false, nil
	}
	if authorOrg == "" {
		authorOrg = author
	}
	if id == authorOrg {
		// The Organizational Domain of an Organizational Domain is
		// itself: its walk meets the records the author's walk met.
		return true, nil
	}
	if !strings.HasSuffix(id, "."+authorOrg) {
		return false, nil
	}
	oi, err := d.OrgDomain(ctx, id)
	if err != nil {
		return false, err
	}
	return oi == authorOrg, nil
}

// policyFound is the outcome of policy discovery for one Author Domain.
type policyFound struct {
	domain string       // the DMARC Policy Domain; "" if none
	rec    *DMARCRecord // the record, after RFC 9989 4.10.1's fallbacks
	org    string       // the author's Organizational Domain
	why    string       // why there is no policy, when there is none
}

// discover finds the DMARC Policy Record for author (RFC 9989 4.10.1, or
// RFC 7489 6.6.3 in PSL mode).
func (d *dmarcDNS) discover(ctx context.Context, author string) (policyFound, error) {
	var pf policyFound
	if d.psl {
		pf.org = pslOrgDomain(author)
		for _, name := range []string{author, pf.org} {
			r := d.recordAt(ctx, name)
			if r.err != nil {
				return pf, r.err
			}
			if r.multiple {
				pf.why = "several DMARC records at _dmarc." + name
				return pf, nil
			}
			if r.rec != nil {
				pf.domain, pf.rec = name, r.rec
				break
			}
			if name == pf.org {
				break
			}
		}
	} else {
		w, err := d.walk(ctx, author)
		if err != nil {
			return pf, err
		}
		pf.org = selectOrg(author, w)
		var psd *found
		for i := range w {
			f := &w[i]
			if f.domain == author || f.domain == pf.org {
				pf.domain, pf.rec = f.domain, f.rec
				break
			}
			if f.rec.PSD == 'y' {
				psd = f
			}
		}
		if pf.rec == nil && psd != nil {
			pf.domain, pf.rec = psd.domain, psd.rec
		}
	}
	if pf.rec == nil {
		if pf.why == "" {
			pf.why = "no DMARC record for " + author
		}
		return pf, nil
	}
	rec, ok := pf.rec.Usable()
	if !ok {
		pf.why = "the DMARC record at _dmarc." + pf.domain + " has an invalid policy and no valid rua"
		pf.domain, pf.rec = "", nil
		return pf, nil
	}
	pf.rec = rec
	return pf, nil
}

// policyFor returns the policy that applies to author under pf, and the
// tag it came from: p for the Policy Domain itself, else np for a
// non-existent author domain, sp, or p (RFC 9989 4.7, 4.10.1).
func (d *dmarcDNS) policyFor(ctx context.Context, author string, pf policyFound) (policy, tag string, err error) {
	rec := pf.rec
	if pf.domain == author {
		return rec.Policy, "p", nil
	}
	sub, subTag := rec.Policy, "p"
	if rec.Subdomain != "" {
		sub, subTag = rec.Subdomain, "sp"
	}
	if rec.NonExistent == "" || rec.NonExistent == sub {
		return sub, subTag, nil
	}
	exists, err := d.res.Exists(ctx, author)
	if err != nil {
		// Unknown existence: the subdomain policy, never the
		// (usually stricter) np on a guess.
		return sub, subTag, nil //nolint:nilerr
	}
	if !exists {
		return rec.NonExistent, "np", nil
	}
	return sub, subTag, nil
}
