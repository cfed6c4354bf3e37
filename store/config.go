package store

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wehr/wehr/setting"
)

// Config is the store: section of the configuration file: which backend,
// and where it is.
type Config struct {
	// Backend is embedded (a bbolt file that wehr serve owns) or redis.
	Backend string `yaml:"backend"`
	// Path is the embedded store's file.
	Path string `yaml:"path"`
	// AdminSocket is where wehr serve lets ops commands reach the
	// embedded store (mode 0600).
	AdminSocket string      `yaml:"admin_socket"`
	Redis       RedisConfig `yaml:"redis"`
}

// Default is the store: section's defaults.
func Default() Config {
	return Config{Backend: "embedded", Path: "/var/lib/wehr/wehr.db", AdminSocket: "/run/wehr/admin.sock",
		Redis: RedisConfig{Mode: "single", Timeout: 300 * time.Millisecond, Prefix: "wehr:"}}
}

// Check reports the problems of the store: section.
func (c Config) Check(p *setting.Problems) {
	p.OneOf("backend", c.Backend, "embedded", "redis")
	if c.Backend == "embedded" {
		if !filepath.IsAbs(c.Path) {
			p.Add("path", "%q must be an absolute path", c.Path)
		}
		if !filepath.IsAbs(c.AdminSocket) {
			p.Add("admin_socket", "%q must be an absolute path", c.AdminSocket)
		}
	}
	if c.Backend == "redis" {
		c.Redis.Check(p.Section("redis"))
	}
}

// Check reports the problems of the store.redis: section.
func (r RedisConfig) Check(p *setting.Problems) {
	p.OneOf("mode", r.Mode, "single", "sentinel", "cluster")
	if len(r.Addrs) == 0 {
		p.Add("addrs", "no address: list the server (single), the Sentinels (sentinel) or seed nodes (cluster)")
	}
	if r.Mode == "single" && len(r.Addrs) > 1 {
		p.Add("addrs", "mode single takes one address; for several, say mode sentinel or cluster")
	}
	if r.Mode == "sentinel" && r.MasterName == "" {
		p.Add("master_name", "mode sentinel needs the master's name (sentinel monitor <name> ...)")
	}
	for i, a := range r.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			p.Add(fmt.Sprintf("addrs[%d]", i), "%q: want HOST:PORT", a)
		}
	}
	p.Positive("timeout", r.Timeout)
	if r.TLS.Enabled {
		tp := p.Section("tls")
		if r.TLS.CAFile != "" {
			if _, err := os.Stat(r.TLS.CAFile); err != nil {
				tp.Add("ca_file", "%v", err)
			}
		}
		if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") {
			tp.Add("cert_file", "cert_file and key_file go together")
		}
	}
}
