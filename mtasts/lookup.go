package mtasts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/wehr/wehr/store"
)

// Cached is a policy as kept between lookups (RFC 8461 5.1).
type Cached struct {
	ID      string
	Policy  Policy
	Fetched time.Time
	Expires time.Time // Fetched plus the policy's max_age
}

// Cache keeps policies between lookups; the store implements it, so
// that every node shares what one fetched.
type Cache interface {
	Get(ctx context.Context, domain string) (Cached, bool, error)
	Put(ctx context.Context, domain string, c Cached) error
}

// TXTResolver looks up TXT records; a name without them is a
// *net.DNSError with IsNotFound.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Resolver finds the policy that applies to mail for a domain, as a
// sending MTA must (RFC 8461 5.1): the TXT record says which policy is
// current, the cache keeps it until it expires, and a fetch that fails
// or a record that disappears never cancels a cached policy before it
// expires: that is what keeps an attacker on the path from downgrading
// a domain by blocking DNS or HTTPS.
type Resolver struct {
	DNS     TXTResolver
	Fetcher *Fetcher
	Cache   Cache
	Now     func() time.Time // nil: time.Now
	// Secure, if set, answers DNSSEC-aware lookups (the AD bit of a
	// validating resolver): a domain whose MX hosts all publish
	// validated TLSA records gets DANE rather than MTA-STS (Result.DANE).
	Secure SecureResolver
}

// DNS is what the service needs of wehr's resolver: TXT records, the
// policy hosts' addresses, and MX and TLSA with the AD bit.
type DNS interface {
	TXTResolver
	IPResolver
	SecureResolver
}

// NewResolver is the Resolver that the policy service and wehr mtasts
// query use: cfg's trusted authorities and fetch deadline, every lookup
// through res, policies kept in cache.
func NewResolver(cfg Config, res DNS, cache Cache) (*Resolver, error) {
	pool, err := cfg.RootCAs()
	if err != nil {
		return nil, fmt.Errorf("mtasts.ca_file: %w", err)
	}
	return &Resolver{DNS: res, Secure: res, Cache: cache,
		Fetcher: &Fetcher{RootCAs: pool, Timeout: cfg.FetchTimeout, Dial: DialVia(res)}}, nil
}

// SecureResolver looks up MX and TLSA records and says whether a
// validating resolver vouched for them.
type SecureResolver interface {
	LookupSecure(ctx context.Context, name string, qtype uint16) ([]dns.RR, bool, error)
}

// daneCovers reports whether DANE covers every MX host of domain: its MX
// records and, for each host, TLSA records at _25._tcp.HOST, all
// DNSSEC-validated. Then DANE takes precedence over MTA-STS (RFC 8461
// 2): it does not depend on a policy fetched over the web PKI.
func (r *Resolver) daneCovers(ctx context.Context, domain string) bool {
	if r.Secure == nil {
		return false
	}
	mxs, secure, err := r.Secure.LookupSecure(ctx, domain, dns.TypeMX)
	if err != nil || !secure || len(mxs) == 0 {
		return false
	}
	for _, rr := range mxs {
		mx, ok := rr.(*dns.MX)
		if !ok || mx.Mx == "." {
			return false // a null MX (RFC 7505): nothing to protect
		}
		tlsa, secure, err := r.Secure.LookupSecure(ctx, "_25._tcp."+mx.Mx, dns.TypeTLSA)
		if err != nil || !secure || len(tlsa) == 0 {
			return false
		}
	}
	return true
}

// Result is what a lookup found, and how.
type Result struct {
	Domain string
	// Policy is nil when none applies.
	Policy *Policy
	ID     string
	// How: "fetched", "cached", or "none".
	How string
	// Err is why there is no policy, or why a cached one was used
	// (the refresh failed); nil when all went well.
	Err error
	// DANE: the policy is enforced, and DNSSEC-validated TLSA records
	// cover every MX host of the domain, so DANE takes precedence.
	DANE bool
}

// Lookup finds domain's policy, and for an enforced one whether DANE
// covers the domain instead (Result.DANE).
func (r *Resolver) Lookup(ctx context.Context, domain string) Result {
	res := r.lookup(ctx, domain, 0)
	if res.Policy != nil && res.Policy.Mode == Enforce {
		res.DANE = r.daneCovers(ctx, res.Domain)
	}
	return res
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Refresh is Lookup, except that a cached policy expiring within
// `within` (at most half its max_age) is fetched again even if its id
// did not change: the background refresh, so that a domain's policy
// does not lapse between two messages to it (RFC 8461 5.1 asks senders
// to check for updates periodically). A failed fetch keeps the cached
// policy, as always.
func (r *Resolver) Refresh(ctx context.Context, domain string, within time.Duration) Result {
	return r.lookup(ctx, domain, within)
}

func (r *Resolver) lookup(ctx context.Context, domain string, within time.Duration) Result {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	now := r.now()
	res := Result{Domain: domain, How: "none"}
	cached, have, cerr := r.Cache.Get(ctx, domain)
	valid := cerr == nil && have && now.Before(cached.Expires)
	useCache := func(why error) Result {
		p := cached.Policy
		return Result{Domain: domain, Policy: &p, ID: cached.ID, How: "cached", Err: why}
	}

	txts, err := r.DNS.LookupTXT(ctx, "_mta-sts."+domain)
	var rec Record
	if err == nil {
		rec, err = SelectRecord(txts)
	} else if de := (*net.DNSError)(nil); errors.As(err, &de) && de.IsNotFound {
		err = fmt.Errorf("%w: _mta-sts.%s does not exist", ErrNoRecord, domain)
	} else {
		err = fmt.Errorf("mtasts: lookup _mta-sts.%s: %w", domain, err)
	}
	switch {
	case err != nil && valid:
		// No record now (or DNS failing): the cached policy stands
		// until it expires (RFC 8461 5.1, 10.1).
		return useCache(err)
	case err != nil:
		res.Err = err
		return res
	case valid && cached.ID == rec.ID && cached.Expires.Sub(now) > min(within, cached.Policy.MaxAge/2):
		return useCache(nil)
	}
	p, err := r.Fetcher.Fetch(ctx, domain)
	if err != nil {
		if valid {
			return useCache(err) // a failed refresh keeps the old policy
		}
		res.Err = err
		return res
	}
	c := Cached{ID: rec.ID, Policy: p, Fetched: now, Expires: now.Add(p.MaxAge)}
	if err := r.Cache.Put(ctx, domain, c); err != nil {
		res.Err = fmt.Errorf("mtasts: caching %s's policy: %w", domain, err)
	}
	return Result{Domain: domain, Policy: &p, ID: rec.ID, How: "fetched", Err: res.Err}
}

// Postfix is the answer for Postfix's smtp_tls_policy_maps: for an
// enforced policy, "secure" with the MX patterns to match the
// certificate against ("*.example.net" becomes ".example.net", which
// Postfix matches at any depth: one label in RFC 8461 4.1, so Postfix is
// a little more lenient there), or "dane-only" where DANE covers the
// domain (mandatory DANE: a Postfix that cannot do DANE, without
// smtp_dns_support_level = dnssec, defers rather than fall back to
// less); nothing (Postfix's own default) for testing, none and no policy.
func (r Result) Postfix() (answer string, found bool) {
	if r.Policy == nil || r.Policy.Mode != Enforce {
		return "", false
	}
	if r.DANE {
		return "dane-only", true
	}
	pats := make([]string, len(r.Policy.MX))
	for i, m := range r.Policy.MX {
		pats[i] = strings.TrimPrefix(m, "*")
	}
	return "secure match=" + strings.Join(pats, ":") + " servername=hostname", true
}

// Explain says in lines what Postfix is told for the domain, and why.
func (r Result) Explain() []string {
	out := []string{"domain: " + r.Domain}
	if r.Policy != nil {
		p := r.Policy
		out = append(out, fmt.Sprintf("policy: id %s, mode %s, max_age %s, mx %s (%s)", r.ID, p.Mode, p.MaxAge, strings.Join(p.MX, " "), r.How))
	} else {
		out = append(out, "policy: none")
	}
	if r.DANE {
		out = append(out, "DANE: validated TLSA records cover every MX host, so DANE takes precedence (RFC 8461 2)")
	}
	if a, ok := r.Postfix(); ok {
		out = append(out, "Postfix is told: "+a)
	} else {
		out = append(out, "Postfix is told: nothing (NOTFOUND: its own smtp_tls_security_level applies)")
	}
	if r.Err != nil {
		why := "why"
		if r.Policy != nil {
			why = "not refreshed"
		}
		out = append(out, why+": "+r.Err.Error())
	}
	return out
}

// RefreshLoop refreshes the cached policies every `every` on the node
// holding the store's refresh lease (one node at a time): each cached
// domain is looked up again, which fetches the policies whose id changed
// or that expire within `within`. It logs what it did, and returns when
// ctx ends.
func (r *Resolver) RefreshLoop(ctx context.Context, p store.StsPolicies, owner string, every, within time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := p.Lock(ctx, owner, time.Now(), every+every/2)
		if err != nil {
			log.Warn("mtasts: refresh: the store's lease", "error", err)
			continue
		}
		if !ok {
			continue // another node refreshes
		}
		domains, err := p.Domains(ctx, 1000000)
		if err != nil {
			log.Warn("mtasts: refresh: listing the cached policies", "error", err)
			continue
		}
		fetched, failed := 0, 0
		for _, d := range domains {
			if ctx.Err() != nil {
				return
			}
			res := r.Refresh(ctx, d, within)
			switch {
			case res.How == "fetched":
				fetched++
			case res.Err != nil:
				failed++
				log.Info("mtasts: refresh failed; the cached policy stays until it expires", "domain", d, "how", res.How, "error", res.Err.Error())
			}
		}
		log.Info("mtasts: cached policies refreshed", "domains", len(domains), "fetched", fetched, "failed", failed)
	}
}
