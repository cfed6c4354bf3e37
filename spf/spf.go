// Package spf evaluates SPF (RFC 7208) through wehr's resolver:
// blitiri.com.ar/go/spf does the evaluation; this package adds what it
// lacks: a deadline, the full RFC 7208 section 12 grammar check of every
// record fetched (a syntax error anywhere is permerror), explanations
// (exp=, with macros, through redirects), the RFC 7208 4.3 domain checks
// and a lenient reading of the MAIL FROM.
package spf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	libspf "blitiri.com.ar/go/spf"
	"github.com/wehr/wehr/deadline"
	"github.com/wehr/wehr/setting"
)

// Resolver is what SPF asks of DNS. *resolver.Resolver is one; it must
// return errors as a bare *net.DNSError, or the library misreads a
// timeout as a permanent error (see package resolver).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Result is an SPF result word (RFC 7208 2.6), as Authentication-Results
// writes it.
type Result string

// The SPF results.
const (
	None      Result = "none"
	Neutral   Result = "neutral"
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// SPF scopes: the MAIL FROM identity and the HELO identity.
const (
	ScopeMailFrom = "mfrom"
	ScopeHelo     = "helo"
)

// Outcome is the outcome of one SPF check.
type Outcome struct {
	Result Result `json:"result"`
	Scope  string `json:"scope"`
	// Domain is the domain checked: the MAIL FROM domain, or the HELO
	// domain for the null sender and the HELO check.
	Domain string `json:"domain"`
	// Explanation is set on fail: the domain's exp= text, or the
	// configured default (RFC 7208 6.2).
	Explanation string `json:"explanation"`
	// Error says what went wrong on temperror and permerror.
	Error string `json:"error"`

	// Identity is the full identity checked: local@domain, with
	// postmaster@<HELO> for the null sender (RFC 7208 2.4).
	Identity string `json:"-"`
	// Detail is the library's note on how the result came about ("matched
	// ip", "matched all"), for logs and A-R comments.
	Detail string `json:"-"`
}

// Config configures SPF checks.
type Config struct {
	// Timeout bounds one whole check (RFC 7208 4.6.4 asks for at least
	// 20 seconds overall; mail paths want less).
	Timeout time.Duration `yaml:"timeout"`
	// HeloCheck asks the verdict engine to check the HELO identity too
	// (RFC 7208 2.3), for Authentication-Results.
	HeloCheck bool `yaml:"helo_check"`
	// DefaultExplanation is the explanation of a fail when the domain
	// gives none; macros are expanded.
	DefaultExplanation string `yaml:"default_explanation"`
	// Receiver is the r macro: the receiving host's name (the
	// configuration's hostname).
	Receiver string `yaml:"-"`
	// Now is the clock (t macro). Default time.Now.
	Now func() time.Time `yaml:"-"`
}

// Default is the spf: section's defaults.
func Default() Config {
	return Config{Timeout: 10 * time.Second, DefaultExplanation: DefaultExplanation}
}

// Check reports the problems of the spf: section.
func (c Config) Check(p *setting.Problems) {
	p.Positive("timeout", c.Timeout)
	if c.Timeout > time.Minute {
		p.Add("timeout", "%v is longer than any Postfix timeout would wait; at most 1m", c.Timeout)
	}
	if err := CheckExplanation(c.DefaultExplanation); err != nil {
		p.Add("default_explanation", "%v", err)
	}
}

// DefaultExplanation is the built-in fail explanation.
const DefaultExplanation = "%{o} does not designate %{c} as a permitted sender"

// Checker runs SPF checks through one resolver. It is safe for
// concurrent use.
type Checker struct {
	res Resolver
	cfg Config
}

// New makes a checker.
func New(res Resolver, cfg Config) *Checker {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.DefaultExplanation == "" {
		cfg.DefaultExplanation = DefaultExplanation
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{res: res, cfg: cfg}
}

// MailFromIdentity returns the SPF identity for a MAIL FROM: the address
// itself, postmaster@<domain> when the local part is empty (RFC 7208 4.3),
// and postmaster@<helo> for the null sender (RFC 7208 2.4).
func MailFromIdentity(mailFrom, helo string) (identity, domain string) {
	mailFrom = strings.TrimSpace(mailFrom)
	mailFrom = strings.TrimSuffix(strings.TrimPrefix(mailFrom, "<"), ">")
	if mailFrom == "" {
		return "postmaster@" + helo, helo
	}
	at := strings.LastIndexByte(mailFrom, '@')
	if at < 0 {
		// Not an address; RFC 5321 has none of these, check the HELO.
		return "postmaster@" + helo, helo
	}
	// White space around the "@" ("marc@ marcbradshaw.net", which
	// Postfix accepts from real Google Apps mail): read the address a
	// lenient MTA took, as authentication_milter does.
	local, domain := strings.TrimSpace(mailFrom[:at]), strings.TrimSpace(mailFrom[at+1:])
	if local == "" {
		local = "postmaster"
	}
	return local + "@" + domain, domain
}

// CheckMailFrom checks the MAIL FROM identity (for the null sender, the
// HELO name as postmaster@<HELO>).
func (c *Checker) CheckMailFrom(ctx context.Context, ip net.IP, helo, mailFrom string) Outcome {
	identity, domain := MailFromIdentity(mailFrom, helo)
	return c.check(ctx, ip, helo, identity, domain, ScopeMailFrom)
}

// CheckHelo checks the HELO identity (RFC 7208 2.3).
func (c *Checker) CheckHelo(ctx context.Context, ip net.IP, helo string) Outcome {
	return c.check(ctx, ip, helo, "postmaster@"+helo, helo, ScopeHelo)
}

func (c *Checker) check(ctx context.Context, ip net.IP, helo, identity, domain, scope string) Outcome {
	res := Outcome{Scope: scope, Domain: domain, Identity: identity}
	if ip == nil {
		res.Result, res.Error = PermError, "no client IP address"
		return res
	}
	// RFC 7208 4.3: a malformed domain or one that is not multi-label
	// gives none, before any DNS lookup.
	if why := badDomain(domain); why != "" {
		res.Result, res.Detail = None, why
		return res
	}

	ctx, cancel := deadline.Timeout(ctx, c.cfg.Timeout)
	defer cancel()
	w := &spfWatch{Resolver: c.res, records: map[string]string{}}
	result, err := libspf.CheckHostWithSender(ip, helo, identity, libspf.WithResolver(w), libspf.WithContext(ctx))

	res.Result = Result(result)
	if err != nil {
		res.Detail = err.Error()
	}
	if serr := w.syntaxError(); serr != nil {
		res.Result, res.Error, res.Detail = PermError, serr.Error(), ""
		return res
	}
	switch result {
	case libspf.TempError, libspf.PermError:
		if err != nil {
			res.Error = err.Error()
		} else {
			res.Error = string(result)
		}
		if result == libspf.TempError && ctx.Err() != nil {
			res.Error = fmt.Sprintf("SPF check exceeded its %v deadline: %s", c.cfg.Timeout, res.Error)
		}
	case libspf.Fail:
		env := &macroEnv{sender: identity, domain: domain, ip: ip, helo: helo, receiver: c.cfg.Receiver, now: c.cfg.Now()}
		env.ptr = func() string { return validatedPTR(ctx, c.res, env.ip, env.domain) }
		res.Explanation = c.explain(ctx, w, env, w.redirects(env))
	}
	return res
}

// explain computes the explanation of a fail (RFC 7208 6.2). The exp=
// that counts is that of the record which produced the result: redirect=
// hands over to the target's exp=, include: does not. redirects is how
// many redirects the result came through.
func (c *Checker) explain(ctx context.Context, w *spfWatch, env *macroEnv, redirects int) string {
	def := func() string {
		s, err := env.expandMacros(c.cfg.DefaultExplanation, true)
		if err != nil {
			return c.cfg.DefaultExplanation
		}
		return s
	}
	rec, ok := w.record(env.domain)
	for range redirects {
		spec, found := modifier(rec, "redirect")
		if !ok || !found {
			return def()
		}
		target, err := env.expandDomain(spec)
		if err != nil {
			return def()
		}
		env.domain = target
		rec, ok = w.record(target)
	}
	if !ok {
		return def()
	}
	spec, found := modifier(rec, "exp")
	if !found {
		return def()
	}
	name, err := env.expandDomain(spec)
	if err != nil {
		return def()
	}
	txts, err := c.res.LookupTXT(ctx, name)
	if err != nil || len(txts) != 1 {
		return def()
	}
	if checkMacroString(txts[0], true) != nil {
		return def()
	}
	text, err := env.expandMacros(txts[0], true)
	if err != nil {
		return def()
	}
	return text
}

// modifier returns the value of the named modifier in an SPF record.
func modifier(rec, name string) (string, bool) {
	for _, term := range strings.Split(rec, " ") {
		if len(term) > len(name) && term[len(name)] == '=' && strings.EqualFold(term[:len(name)], name) {
			return term[len(name)+1:], true
		}
	}
	return "", false
}

// badDomain says why domain cannot be an SPF domain (RFC 7208 4.3), or
// "" if it can.
func badDomain(domain string) string {
	d := strings.TrimSuffix(domain, ".")
	if d == "" {
		return "empty domain"
	}
	if len(d) > 253 {
		return "domain longer than 253 characters"
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return "domain is not multi-label"
	}
	for _, l := range labels {
		if l == "" {
			return "domain has an empty label"
		}
		if len(l) > 63 {
			return "domain has a label longer than 63 characters"
		}
	}
	return ""
}

// spfWatch is the resolver the SPF library sees. It remembers every SPF
// record fetched (for exp=) and refuses a record that breaks the RFC 7208
// grammar, which the library would otherwise evaluate up to its first
// match.
type spfWatch struct {
	Resolver
	mu      sync.Mutex
	records map[string]string // lower-case domain → SPF record
	asked   []string          // the TXT names the library asked for, in order
	synErr  error
}

// errBadRecord stops the library on a malformed record; it is not a
// *net.DNSError, so the library turns it into permerror.
var errBadRecord = errors.New("malformed SPF record")

func (w *spfWatch) LookupTXT(ctx context.Context, name string) ([]string, error) {
	w.mu.Lock()
	w.asked = append(w.asked, normName(name))
	w.mu.Unlock()
	txts, err := w.Resolver.LookupTXT(ctx, name)
	if err != nil {
		return nil, err // bare *net.DNSError, passed on untouched
	}
	var recs []string
	for _, t := range txts {
		if IsRecord(t) {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return txts, nil // none, or several: the library handles both
	}
	key := strings.ToLower(strings.TrimSuffix(name, "."))
	w.mu.Lock()
	defer w.mu.Unlock()
	w.records[key] = recs[0]
	if err := CheckRecord(recs[0]); err != nil {
		if w.synErr == nil {
			w.synErr = fmt.Errorf("SPF record of %s: %w", key, err)
		}
		return nil, errBadRecord
	}
	return txts, nil
}

func (w *spfWatch) record(domain string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.records[strings.ToLower(strings.TrimSuffix(domain, "."))]
	return r, ok
}

func (w *spfWatch) syntaxError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synErr
}

// redirects says how many redirect= modifiers the result of the check
// came through, from what the library asked of DNS: it fetches the TXT
// record of a domain once each time it evaluates one (the checked
// domain, an include: target, a redirect= target), depth first and in
// record order, and stops a record at its first match. Replaying the
// records fetched in that order shows which redirects were followed,
// without reading the library's trace text. Whatever does not replay
// (a lookup limit, an error) ends the walk: the explanation is then the
// default or the last record's, never another domain's.
func (w *spfWatch) redirects(env *macroEnv) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	seq, pos := w.asked, 0
	next := func(domain string) bool {
		if pos < len(seq) && seq[pos] == normName(domain) {
			pos++
			return true
		}
		return false
	}
	saved := env.domain
	defer func() { env.domain = saved }()
	// chain replays the evaluation of domain, and of the redirects it
	// followed; it returns how many, and false when the replay failed.
	var chain func(domain string, depth int) (int, bool)
	chain = func(domain string, depth int) (int, bool) {
		n := 0
		for {
			if depth > 20 || !next(domain) {
				return n, false
			}
			rec, ok := w.records[normName(domain)]
			if !ok {
				return n, false
			}
			for _, term := range strings.Fields(rec) {
				t := strings.TrimLeft(term, "+-~?")
				if len(t) < 8 || !strings.EqualFold(t[:8], "include:") {
					continue
				}
				env.domain = domain
				target, err := env.expandDomain(t[8:])
				if err != nil || pos >= len(seq) || seq[pos] != normName(target) {
					return n, true // the record stopped before this include
				}
				if _, ok := chain(target, depth+1); !ok {
					return n, false
				}
			}
			spec, found := modifier(rec, "redirect")
			if !found {
				return n, true
			}
			env.domain = domain
			target, err := env.expandDomain(spec)
			if err != nil || pos >= len(seq) || seq[pos] != normName(target) {
				return n, true
			}
			domain, n, depth = target, n+1, depth+1
		}
	}
	n, _ := chain(saved, 0)
	return n
}

func normName(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }
