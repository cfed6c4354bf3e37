package mtasts

import (
	"crypto/x509"
	"fmt"
	"os"
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
}

// Default is the mtasts: section's defaults.
func Default() Config {
	return Config{LookupTimeout: 10 * time.Second, FetchTimeout: 8 * time.Second}
}

// Check reports the problems of the mtasts: section.
func (c Config) Check(p *setting.Problems) {
	if c.Listen != "" {
		if _, err := listener.ParseAddress(c.Listen, c.AllowRemote); err != nil {
			p.Add("listen", "%v", err)
		}
	}
	p.Positive("lookup_timeout", c.LookupTimeout)
	p.Positive("fetch_timeout", c.FetchTimeout)
	if c.FetchTimeout > c.LookupTimeout {
		p.Add("fetch_timeout", "%v is longer than lookup_timeout %v, which bounds the whole answer", c.FetchTimeout, c.LookupTimeout)
	}
	if c.CAFile != "" {
		if _, err := c.RootCAs(); err != nil {
			p.Add("ca_file", "%v", err)
		}
	}
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
