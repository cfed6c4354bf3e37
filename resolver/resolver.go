// Package resolver is the one DNS stub resolver every lookup in wehr goes
// through.
//
// It asks the configured recursive servers (or those in /etc/resolv.conf)
// over UDP with EDNS0, retries over TCP when an answer is truncated, checks
// that an answer answers the question that was asked, caches positive
// answers for their TTL and negative ones for the SOA minimum (RFC 2308),
// lets only one query per name and type be in flight, and honours a
// deadline on every query.
//
// Errors are returned as a bare *net.DNSError, never wrapped: the SPF,
// DKIM and DMARC libraries tell "no such record" from "try again later" by
// a type assertion on exactly that type. NXDOMAIN and NODATA set
// IsNotFound; SERVFAIL, REFUSED, malformed answers and timeouts set
// IsTemporary (and IsTimeout for timeouts).
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/wehr/wehr/setting"
	"golang.org/x/sync/singleflight"
)

// Config configures a Resolver; it is the dns: section of the
// configuration file. A zero duration or attempt count means its default;
// a CacheSize of 0 or less turns the cache off (Default has 50000).
type Config struct {
	// Servers are the recursive servers, HOST:PORT (or HOST, port 53).
	// Empty means the nameservers of ResolvConf.
	Servers []string `yaml:"servers"`
	// ResolvConf is read when Servers is empty.
	ResolvConf string `yaml:"resolv_conf"`
	// Timeout bounds one attempt at one server. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Attempts is the number of rounds over all servers. Default 2.
	Attempts int `yaml:"attempts"`
	// CacheSize caps the number of cached answers.
	CacheSize int `yaml:"cache_size"`
	// MinTTL and MaxTTL clamp the TTL of cached positive answers.
	// Defaults 0 and 1h.
	MinTTL time.Duration `yaml:"min_ttl"`
	MaxTTL time.Duration `yaml:"max_ttl"`
	// NegativeMaxTTL caps the time a negative answer is cached.
	// Default 15m.
	NegativeMaxTTL time.Duration `yaml:"negative_max_ttl"`
	// ServeStale is how long past its TTL a cached answer is still
	// given when the servers fail (SERVFAIL, timeouts): RFC 8767, so
	// that a short outage of the recursive resolver does not turn every
	// check into a temperror. 0: never.
	ServeStale time.Duration `yaml:"serve_stale"`
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time `yaml:"-"`
}

// Default is the dns: section's defaults.
func Default() Config {
	return Config{ResolvConf: "/etc/resolv.conf", Timeout: 2 * time.Second, Attempts: 2, CacheSize: 50000,
		MaxTTL: time.Hour, NegativeMaxTTL: 15 * time.Minute, ServeStale: time.Hour}
}

// Check reports the problems of the dns: section.
func (c Config) Check(p *setting.Problems) {
	for i, s := range c.Servers {
		if _, err := NormalizeServer(s); err != nil {
			p.Add(fmt.Sprintf("servers[%d]", i), "%q: want an IP address with an optional port, e.g. 127.0.0.1:53", s)
		}
	}
	if len(c.Servers) == 0 && c.ResolvConf == "" {
		p.Add("resolv_conf", "empty, and no dns.servers given")
	}
	p.Positive("timeout", c.Timeout)
	if c.Attempts < 1 || c.Attempts > 10 {
		p.Add("attempts", "must be 1 to 10, got %d", c.Attempts)
	}
	if c.CacheSize < 0 {
		p.Add("cache_size", "must be 0 (no cache) or more, got %d", c.CacheSize)
	}
	if c.MinTTL < 0 {
		p.Add("min_ttl", "must not be negative")
	}
	p.Positive("max_ttl", c.MaxTTL)
	if c.MinTTL > c.MaxTTL {
		p.Add("min_ttl", "%v is above dns.max_ttl %v", c.MinTTL, c.MaxTTL)
	}
	p.Positive("negative_max_ttl", c.NegativeMaxTTL)
	if c.ServeStale < 0 || c.ServeStale > 7*24*time.Hour {
		p.Add("serve_stale", "must be 0 (never) to 168h, got %v (RFC 8767 suggests 1 to 3 days at most)", c.ServeStale)
	}
}

// Stats counts what a Resolver did since it was made.
type Stats struct {
	Lookups   int64 // calls of Query, including those answered from cache
	CacheHits int64
	Coalesced int64 // calls that waited for an identical query in flight
	Exchanges int64 // queries sent to servers (UDP and TCP retries count once each)
	TCPRetry  int64
	Failures  int64 // lookups that ended in a temporary error
	Stale     int64 // lookups answered with an expired answer (serve-stale)
}

// Resolver is a caching stub resolver. It is safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	minTTL   time.Duration
	maxTTL   time.Duration
	negTTL   time.Duration
	stale    time.Duration
	now      func() time.Time
	udp      *dns.Client
	tcp      *dns.Client
	cache    *cache
	flight   singleflight.Group
	*counters
}

// counters are a Resolver's Stats, shared with its WithCache views.
type counters struct {
	lookups, hits, coalesced, exchanges, tcpRetry, failures, staleHits atomic.Int64
}

// New makes a Resolver from cfg.
func New(cfg Config) (*Resolver, error) {
	servers := cfg.Servers
	if len(servers) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = "/etc/resolv.conf"
		}
		var err error
		servers, err = ServersFromResolvConf(path)
		if err != nil {
			return nil, err
		}
	}
	norm := make([]string, 0, len(servers))
	for _, s := range servers {
		hp, err := NormalizeServer(s)
		if err != nil {
			return nil, err
		}
		norm = append(norm, hp)
	}
	r := &Resolver{
		servers:  norm,
		timeout:  or(cfg.Timeout, 2*time.Second),
		attempts: cfg.Attempts,
		minTTL:   cfg.MinTTL,
		maxTTL:   or(cfg.MaxTTL, time.Hour),
		negTTL:   or(cfg.NegativeMaxTTL, 15*time.Minute),
		stale:    cfg.ServeStale,
		now:      cfg.Now,
		counters: &counters{},
	}
	if r.attempts <= 0 {
		r.attempts = 2
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.cache = newCache(cfg.CacheSize, r.stale)
	r.udp = &dns.Client{Net: "udp", Timeout: r.timeout, UDPSize: ednsSize}
	r.tcp = &dns.Client{Net: "tcp", Timeout: r.timeout}
	return r, nil
}

// WithCache is a Resolver that asks the same servers in the same way,
// and counts in the same Stats, but keeps its answers in a cache of its
// own of size entries (0: none). A workload with a long tail of names,
// such as the MTA-STS lookups of every destination domain, then never
// evicts the answers that mail authentication asks for again and again;
// and its cost in memory is its own bound.
func (r *Resolver) WithCache(size int) *Resolver {
	return &Resolver{servers: r.servers, timeout: r.timeout, attempts: r.attempts, minTTL: r.minTTL, maxTTL: r.maxTTL,
		negTTL: r.negTTL, stale: r.stale, now: r.now, udp: r.udp, tcp: r.tcp, cache: newCache(size, r.stale), counters: r.counters}
}

// ednsSize is the EDNS0 buffer size we advertise (the DNS flag day 2020
// value: no fragmentation on common paths).
const ednsSize = 1232

func or(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// NormalizeServer turns HOST or HOST:PORT into HOST:PORT.
func NormalizeServer(s string) (string, error) {
	if ip := net.ParseIP(strings.Trim(s, "[]")); ip != nil {
		return net.JoinHostPort(ip.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("resolver: server %q: want HOST:PORT", s)
	}
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("resolver: server %q: host must be an IP address", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("resolver: server %q: bad port", s)
	}
	return net.JoinHostPort(host, port), nil
}

// ServersFromResolvConf reads the nameservers of a resolv.conf file.
func ServersFromResolvConf(path string) ([]string, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("resolver: read %s: %w", path, err)
	}
	if len(cc.Servers) == 0 {
		return nil, fmt.Errorf("resolver: no nameserver in %s", path)
	}
	var out []string
	for _, s := range cc.Servers {
		out = append(out, net.JoinHostPort(s, cc.Port))
	}
	return out, nil
}

// Servers returns the servers queried, in order.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Lookups:   r.lookups.Load(),
		CacheHits: r.hits.Load(),
		Coalesced: r.coalesced.Load(),
		Exchanges: r.exchanges.Load(),
		TCPRetry:  r.tcpRetry.Load(),
		Failures:  r.failures.Load(),
		Stale:     r.staleHits.Load(),
	}
}

// CacheLen is the number of cached answers.
func (r *Resolver) CacheLen() int { return r.cache.len() }

// Query returns the records of type qtype at name; CNAMEs are followed by
// the recursive server and their targets' records are included. The error
// is a bare *net.DNSError.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	e, err := r.lookup(ctx, name, qtype)
	if err != nil {
		return nil, err
	}
	return r.result(e, name)
}

// cacheName is name fully qualified, its ASCII letters in lower case
// (RFC 4343: only those compare without case), copied only when it must
// change.
func cacheName(name string) string {
	fq := dns.IsFqdn(name)
	upper := false
	for i := 0; i < len(name); i++ {
		if 'A' <= name[i] && name[i] <= 'Z' {
			upper = true
			break
		}
	}
	if fq && !upper {
		return name
	}
	var b strings.Builder
	b.Grow(len(name) + 1)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	if !fq {
		b.WriteByte('.')
	}
	return b.String()
}

// Exists reports whether name exists (RFC 8020, RFC 9989 3.2.13): an
// NXDOMAIN answer means it does not, any other answer, with data or not,
// means it does.
func (r *Resolver) Exists(ctx context.Context, name string) (bool, error) {
	e, err := r.lookup(ctx, name, dns.TypeA)
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return false, nil // not a valid name
		}
		return false, err
	}
	return e.rcode != dns.RcodeNameError, nil
}

// lookup answers a question from the cache or the network.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*entry, error) {
	r.lookups.Add(1)
	k := cacheKey{name: cacheName(name), qtype: qtype}
	if _, ok := dns.IsDomainName(k.name); !ok || len(k.name) > 254 {
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, IsNotFound: true}
	}
	e, fresh := r.cache.get(k, r.now())
	if e != nil && fresh {
		r.hits.Add(1)
		return e, nil
	}
	stale := e // expired, but within dns.serve_stale: the answer if the servers fail
	if err := ctx.Err(); err != nil {
		return nil, r.ctxError(name, err)
	}
	leader := false // set by fn, which runs only in the leader's call; read after its result
	ch := r.flight.DoChan(k.name+"/"+strconv.Itoa(int(k.qtype)), func() (any, error) {
		leader = true
		// The query runs on its own deadline so that one caller
		// giving up does not fail the others waiting for it.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout*time.Duration(r.attempts*len(r.servers)))
		defer cancel()
		e, err := r.exchange(qctx, k)
		if err == nil {
			r.store(e)
		}
		return e, err
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		r.failures.Add(1)
		return nil, r.ctxError(name, ctx.Err())
	}
	if !leader {
		r.coalesced.Add(1)
	}
	if res.Err != nil {
		var de *net.DNSError
		if stale != nil && (!errors.As(res.Err, &de) || de.IsTemporary || de.IsTimeout) {
			// RFC 8767: the servers fail, the expired answer stands in.
			r.staleHits.Add(1)
			return stale, nil
		}
		r.failures.Add(1)
		if errors.As(res.Err, &de) {
			cp := *de
			cp.Name = name
			return nil, &cp
		}
		return nil, &net.DNSError{Err: res.Err.Error(), Name: name, IsTemporary: true}
	}
	return res.Val.(*entry), nil
}

func (r *Resolver) ctxError(name string, err error) error {
	return &net.DNSError{Err: "i/o timeout (" + err.Error() + ")", Name: name, IsTimeout: true, IsTemporary: true}
}

// result turns a cached or fresh entry into Query's return values.
func (r *Resolver) result(e *entry, name string) ([]dns.RR, error) {
	if e.rcode == dns.RcodeNameError || len(e.rrs) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return e.rrs, nil
}

// store caches e for its TTL.
func (r *Resolver) store(e *entry) {
	if e.expires.IsZero() {
		return
	}
	r.cache.put(e)
}

// exchange asks the servers until one gives a usable answer.
func (r *Resolver) exchange(ctx context.Context, k cacheKey) (*entry, error) {
	var last error
	for range r.attempts {
		for _, srv := range r.servers {
			if ctx.Err() != nil {
				return nil, &net.DNSError{Err: "i/o timeout", Server: srv, IsTimeout: true, IsTemporary: true}
			}
			resp, err := r.exchangeOne(ctx, srv, k)
			if err != nil {
				last = err
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return r.entryFrom(k, resp), nil
			case dns.RcodeServerFailure:
				last = &net.DNSError{Err: "server misbehaving (SERVFAIL)", Server: srv, IsTemporary: true}
			case dns.RcodeRefused:
				last = &net.DNSError{Err: "server refused the query (REFUSED)", Server: srv, IsTemporary: true}
			default:
				last = &net.DNSError{Err: "server answered " + dns.RcodeToString[resp.Rcode], Server: srv, IsTemporary: true}
			}
		}
	}
	return nil, last
}

// exchangeOne sends one query to one server, over UDP and, when the answer
// is truncated, again over TCP.
func (r *Resolver) exchangeOne(ctx context.Context, srv string, k cacheKey) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(k.name, k.qtype)
	m.RecursionDesired = true
	// MX and TLSA are asked with the DO bit: whether a validating
	// resolver vouches for them decides DANE (LookupSecure).
	m.SetEdns0(ednsSize, secureType(k.qtype))
	m.AuthenticatedData = secureType(k.qtype)

	r.exchanges.Add(1)
	resp, err := roundTrip(ctx, r.udp, m, srv)
	if err == nil && resp.Truncated {
		r.tcpRetry.Add(1)
		r.exchanges.Add(1)
		resp, err = roundTrip(ctx, r.tcp, m, srv)
		if err == nil && resp.Truncated {
			// Over TCP there is nothing larger to ask for: the answer
			// we have is incomplete, never "no such record" (a DKIM
			// key would turn into a permanent error).
			return nil, &net.DNSError{Err: "answer truncated over TCP", Server: srv, IsTemporary: true}
		}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return nil, &net.DNSError{Err: "i/o timeout", Server: srv, IsTimeout: true, IsTemporary: true}
		}
		return nil, &net.DNSError{Err: err.Error(), Server: srv, IsTemporary: true}
	}
	// The library matches the message ID but not the question: an
	// answer to another question must not be cached as this one.
	if len(resp.Question) != 1 || !sameName(resp.Question[0].Name, k.name) ||
		resp.Question[0].Qtype != k.qtype || resp.Question[0].Qclass != dns.ClassINET {
		return nil, &net.DNSError{Err: "answer does not match the question", Server: srv, IsTemporary: true}
	}
	return resp, nil
}

// errCounts is a NOERROR or NXDOMAIN answer whose header counts more
// records than it holds (a truncating middlebox, a broken server).
var errCounts = errors.New("malformed answer: the header counts more records than the message holds")

// roundTrip is the library's exchange, except that it reads the raw
// answer: the library's lenient unpacking turns an answer cut short
// without TC into a complete NOERROR with fewer records, which would be
// cached as "no such record". It also keeps waiting, over UDP, past
// datagrams that are not the answer (short, or another ID).
func roundTrip(ctx context.Context, c *dns.Client, m *dns.Msg, srv string) (*dns.Msg, error) {
	co, err := c.DialContext(ctx, srv)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	co.UDPSize = ednsSize
	if dl, ok := ctx.Deadline(); ok {
		co.SetDeadline(dl) //nolint:errcheck
	}
	if err := co.WriteMsg(m); err != nil {
		return nil, err
	}
	udp := c.Net == "udp"
	for {
		var h dns.Header
		raw, err := co.ReadMsgHeader(&h)
		if err != nil {
			if udp && (errors.Is(err, dns.ErrShortRead) || isUnpackError(err)) {
				continue
			}
			return nil, err
		}
		if h.Id != m.Id {
			if udp {
				continue // a late answer to an earlier query, or junk
			}
			return nil, dns.ErrId
		}
		resp := new(dns.Msg)
		if err := resp.Unpack(raw); err != nil {
			return nil, err
		}
		if rc := resp.Rcode; (rc == dns.RcodeSuccess || rc == dns.RcodeNameError) && !resp.Truncated &&
			(int(h.Qdcount) != len(resp.Question) || int(h.Ancount) != len(resp.Answer) ||
				int(h.Nscount) != len(resp.Ns) || int(h.Arcount) != len(resp.Extra)) {
			return nil, errCounts
		}
		return resp, nil
	}
}

// isUnpackError reports whether the library could not read a header.
func isUnpackError(err error) bool {
	var de *dns.Error
	return errors.As(err, &de)
}

// sameName compares two names in wire form, ignoring ASCII case: the
// library hands back a name it unpacked in presentation form, with bytes
// such as spaces escaped, which SPF macros can put into a name.
func sameName(a, b string) bool {
	var wa, wb [256]byte
	na, err1 := dns.PackDomainName(dns.Fqdn(a), wa[:], 0, nil, false)
	nb, err2 := dns.PackDomainName(dns.Fqdn(b), wb[:], 0, nil, false)
	if err1 != nil || err2 != nil {
		return false
	}
	return strings.EqualFold(string(wa[:na]), string(wb[:nb]))
}

// entryFrom builds the cache entry for a NOERROR or NXDOMAIN answer.
func (r *Resolver) entryFrom(k cacheKey, resp *dns.Msg) *entry {
	e := &entry{key: k, rcode: resp.Rcode, ad: resp.AuthenticatedData && secureType(k.qtype)}
	var ttl uint32
	first := true
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Class != dns.ClassINET {
			continue
		}
		if h.Rrtype == k.qtype || h.Rrtype == dns.TypeCNAME {
			if first || h.Ttl < ttl {
				ttl, first = h.Ttl, false
			}
		}
		if h.Rrtype == k.qtype {
			e.rrs = append(e.rrs, rr)
		}
	}
	if resp.Rcode == dns.RcodeSuccess && len(e.rrs) > 0 {
		if k.qtype == dns.TypeTXT {
			e.txt = txtStrings(e.rrs)
		}
		d := time.Duration(ttl) * time.Second
		d = max(d, r.minTTL)
		d = min(d, r.maxTTL)
		if d > 0 {
			e.expires = r.now().Add(d)
		}
		return e
	}
	e.rrs = nil
	// RFC 2308 5: a negative answer is cached for the lesser of the SOA's
	// TTL and its MINIMUM field; without a SOA it is not cached.
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			d := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			d = min(d, r.negTTL)
			if d > 0 {
				e.expires = r.now().Add(d)
			}
			break
		}
	}
	return e
}

// secureType: MX and TLSA are asked with the DO bit, so that the AD bit
// of a validating resolver tells whether the answer is DNSSEC-validated.
func secureType(t uint16) bool { return t == dns.TypeMX || t == dns.TypeTLSA }

// LookupSecure returns the records of type qtype (MX or TLSA) at name,
// and whether the server vouched for them with the AD bit (RFC 4035
// 3.2.3): only meaningful when the server is a validating resolver this
// host trusts (on the same host, or over a trusted path), as Postfix's
// DANE assumes too. A name without such records is a *net.DNSError
// with IsNotFound; its secure flag still says whether the denial was
// validated.
func (r *Resolver) LookupSecure(ctx context.Context, name string, qtype uint16) ([]dns.RR, bool, error) {
	if !secureType(qtype) {
		return nil, false, fmt.Errorf("resolver: %s is not asked with DNSSEC", dns.TypeToString[qtype])
	}
	e, err := r.lookup(ctx, name, qtype)
	if err != nil {
		return nil, false, err
	}
	rrs, err := r.result(e, name)
	return rrs, e.ad, err
}

// LookupTXT returns the TXT records at name, each record's strings joined
// without separator (RFC 7208 3.3, RFC 6376 3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	e, err := r.lookup(ctx, name, dns.TypeTXT)
	if err == nil {
		_, err = r.result(e, name)
	}
	if err != nil {
		return nil, err
	}
	return slices.Clone(e.txt), nil
}

// txtStrings is each TXT record's strings joined, in wire bytes: made
// once, when the answer is cached (joining a 2048-bit key's two strings
// for every message was a tenth of the resolver's allocations).
func txtStrings(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		txt := rr.(*dns.TXT).Txt
		if len(txt) == 1 {
			out = append(out, unescape(txt[0])) // no copy without escapes
			continue
		}
		n := 0
		for _, s := range txt {
			n += len(s)
		}
		var b strings.Builder
		b.Grow(n)
		for _, s := range txt {
			b.WriteString(unescape(s))
		}
		out = append(out, b.String())
	}
	return out
}

// unescape turns a character-string from miekg/dns's presentation form
// (\DDD for unprintable bytes, \" and \\) back into its wire bytes.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		i++
		if i+2 < len(s) && isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]) {
			n := int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0')
			if n <= 255 {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// LookupMX returns the MX records at name, in the order received.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIP returns the addresses of host for network "ip4" (A), "ip6"
// (AAAA) or "ip" (both).
func (r *Resolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	var types []uint16
	switch network {
	case "ip4":
		types = []uint16{dns.TypeA}
	case "ip6":
		types = []uint16{dns.TypeAAAA}
	default:
		types = []uint16{dns.TypeA, dns.TypeAAAA}
	}
	type res struct {
		rrs []dns.RR
		err error
	}
	results := make([]res, len(types))
	switch {
	case len(types) == 1:
		results[0].rrs, results[0].err = r.Query(ctx, host, types[0])
	case r.cached(host, types[1]):
		// At most one query goes out: no goroutine to wait for it.
		results[0].rrs, results[0].err = r.Query(ctx, host, types[0])
		results[1].rrs, results[1].err = r.Query(ctx, host, types[1])
	default:
		done := make(chan struct{})
		go func() {
			results[1].rrs, results[1].err = r.Query(ctx, host, types[1])
			close(done)
		}()
		results[0].rrs, results[0].err = r.Query(ctx, host, types[0])
		<-done
	}
	var ips []net.IP
	var firstErr error
	for _, x := range results {
		for _, rr := range x.rrs {
			switch rr := rr.(type) {
			case *dns.A:
				ips = append(ips, rr.A)
			case *dns.AAAA:
				ips = append(ips, rr.AAAA)
			}
		}
		if x.err != nil && (firstErr == nil || isTemporary(x.err)) {
			firstErr = x.err
		}
	}
	if len(ips) > 0 {
		return ips, nil
	}
	if firstErr == nil {
		firstErr = &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return nil, firstErr
}

// cached says whether the cache holds a live answer for name and qtype.
func (r *Resolver) cached(name string, qtype uint16) bool {
	e, fresh := r.cache.get(cacheKey{name: cacheName(name), qtype: qtype}, r.now())
	return e != nil && fresh
}

func isTemporary(err error) bool {
	de, ok := err.(*net.DNSError)
	return ok && de.Temporary()
}

// LookupIPAddr returns the A and AAAA addresses of host.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := r.LookupIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip}
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr (fully qualified, with the
// trailing dot, like net.Resolver).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr, IsNotFound: true}
	}
	rrs, err := r.Query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}
