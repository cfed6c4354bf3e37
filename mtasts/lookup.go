package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
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
}

// Lookup finds domain's policy.
func (r *Resolver) Lookup(ctx context.Context, domain string) Result {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	now := time.Now()
	if r.Now != nil {
		now = r.Now()
	}
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
	case valid && cached.ID == rec.ID:
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
// a little more lenient there); nothing (Postfix's own default) for
// testing, none and no policy.
func (r Result) Postfix() (answer string, found bool) {
	if r.Policy == nil || r.Policy.Mode != Enforce {
		return "", false
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
