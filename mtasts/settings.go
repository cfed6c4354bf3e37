package mtasts

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
)

// Config is the mtasts: section of the configuration file.
type Config struct {
	// Listen is where Postfix's smtp_tls_policy_maps asks
	// (socketmap:inet:127.0.0.1:PORT:postfix); "" runs no MTA-STS.
	Listen string `yaml:"listen"`
	// AllowRemote lets Listen be other than loopback.
	AllowRemote bool `yaml:"allow_remote"`
	// LookupTimeout bounds one answer to Postfix (DNS, cache, fetch).
	LookupTimeout time.Duration `yaml:"lookup_timeout"`
	// FetchTimeout bounds fetching one policy file.
	FetchTimeout time.Duration `yaml:"fetch_timeout"`
	// CAFile, if set, holds the certificate authorities (PEM) trusted
	// for policy hosts instead of the system's.
	CAFile string `yaml:"ca_file"`
	// AnswerCache is how long an answer is kept in memory and given
	// again without the store, DNS or DANE check (0: every lookup in
	// full); AnswerCacheSize bounds how many are kept.
	AnswerCache     time.Duration `yaml:"answer_cache"`
	AnswerCacheSize int           `yaml:"answer_cache_size"`
	// DNSCacheSize bounds the DNS answers MTA-STS lookups keep (the
	// TXT records, the policy hosts' addresses, the DANE checks' MX and
	// TLSA records), in a cache of their own: a long tail of
	// destinations never evicts the answers mail authentication reuses
	// from the shared one (dns.cache_size).
	DNSCacheSize int `yaml:"dns_cache_size"`
	// Serve: the policy files wehr serves for domains that point
	// mta-sts.DOMAIN at this host.
	Serve ServeConfig `yaml:"serve"`
}

// Default is the mtasts: section's defaults.
func Default() Config {
	return Config{LookupTimeout: 10 * time.Second, FetchTimeout: 8 * time.Second, AnswerCache: time.Minute, AnswerCacheSize: 200000, DNSCacheSize: 5000}
}

// Check reports the problems of the mtasts: section.
func (c Config) Check(p *setting.Problems) {
	if c.Listen != "" {
		if _, err := listener.ParseAddress(c.Listen, c.AllowRemote); err != nil {
			p.Add("listen", "%v", err)
		}
	}
	p.Positive("lookup_timeout", c.LookupTimeout)
	if c.AnswerCache < 0 || c.AnswerCache > time.Hour {
		p.Add("answer_cache", "%v: between 0 (off) and 1h; a domain's changed policy is seen this late", c.AnswerCache)
	}
	if c.AnswerCacheSize < 1 || c.AnswerCacheSize > 10_000_000 {
		p.Add("answer_cache_size", "%d: between 1 and 10000000 answers", c.AnswerCacheSize)
	}
	if c.DNSCacheSize < 0 || c.DNSCacheSize > 1_000_000 {
		p.Add("dns_cache_size", "%d: between 0 (none: every lookup asks the DNS servers) and 1000000 answers", c.DNSCacheSize)
	}
	p.Positive("fetch_timeout", c.FetchTimeout)
	if c.FetchTimeout > c.LookupTimeout {
		p.Add("fetch_timeout", "%v is longer than lookup_timeout %v, which bounds the whole answer", c.FetchTimeout, c.LookupTimeout)
	}
	if c.CAFile != "" {
		if _, err := c.RootCAs(); err != nil {
			p.Add("ca_file", "%v", err)
		}
	}
	c.Serve.check(p)
}

// RootCAs reads CAFile (nil: the system's authorities).
func (c Config) RootCAs() (*x509.CertPool, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", c.CAFile)
	}
	return pool, nil
}

// Served is a policy wehr serves for a domain (ours or a customer's that
// points mta-sts.DOMAIN at our hosts).
type Served struct {
	Domain string        `yaml:"domain"`
	Mode   string        `yaml:"mode"`
	MX     []string      `yaml:"mx"`
	MaxAge time.Duration `yaml:"max_age"`
	// CertFile and KeyFile: a certificate valid for mta-sts.DOMAIN.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ServeConfig is mtasts.serve: the policy files wehr serves over HTTPS.
type ServeConfig struct {
	// Listen is the HTTPS address (inet:0.0.0.0:443); "" serves none.
	Listen   string   `yaml:"listen"`
	Policies []Served `yaml:"policies"`
}

// check reports the problems of mtasts.serve.
func (c ServeConfig) check(p *setting.Problems) {
	if c.Listen == "" {
		if len(c.Policies) > 0 {
			p.Add("serve.listen", "policies are configured but serve.listen is empty: nothing serves them")
		}
		return
	}
	if a, err := listener.ParseAddress(c.Listen, true); err != nil {
		p.Add("serve.listen", "%v", err)
	} else if a.Network != "tcp" {
		p.Add("serve.listen", "%q: senders fetch policies over HTTPS: write inet:HOST:443", c.Listen)
	}
	seen := map[string]bool{}
	for i, s := range c.Policies {
		key := fmt.Sprintf("serve.policies[%d]", i)
		if _, err := s.Policy(); err != nil {
			p.Add(key, "%v", err)
		}
		d := strings.ToLower(strings.TrimSuffix(s.Domain, "."))
		if seen[d] {
			p.Add(key+".domain", "%s is served twice", d)
		}
		seen[d] = true
		if _, err := s.certificate(); err != nil {
			p.Add(key+".cert_file", "%v", err)
		}
	}
}

// Policy is what s serves.
func (s Served) Policy() (Policy, error) {
	if !validPattern(strings.ToLower(strings.TrimSuffix(s.Domain, "."))) {
		return Policy{}, fmt.Errorf("domain %q is not a domain name", s.Domain)
	}
	if s.MaxAge <= 0 || s.MaxAge > MaxMaxAge {
		return Policy{}, fmt.Errorf("max_age %v: more than 0, at most %v", s.MaxAge, MaxMaxAge)
	}
	file, _ := Publish(Policy{Mode: Mode(s.Mode), MaxAge: s.MaxAge.Truncate(time.Second), MX: s.MX})
	return ParsePolicy([]byte(file))
}

// certificate loads s's certificate and checks that it is valid for
// mta-sts.DOMAIN now.
func (s Served) certificate() (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		return c, err
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return c, err
	}
	host := "mta-sts." + strings.ToLower(strings.TrimSuffix(s.Domain, "."))
	if err := leaf.VerifyHostname(host); err != nil {
		return c, fmt.Errorf("%s: %v", s.CertFile, err)
	}
	if time.Now().After(leaf.NotAfter) {
		return c, fmt.Errorf("%s expired on %s", s.CertFile, leaf.NotAfter.Format(time.DateOnly))
	}
	c.Leaf = leaf
	return c, nil
}
