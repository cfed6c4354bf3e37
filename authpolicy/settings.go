package authpolicy

import (
	"time"

	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
)

// Config is the authpolicy: section of the configuration file.
type Config struct {
	// Listen is the HTTP address Dovecot's auth_policy_server_url names
	// (inet:HOST:PORT); "" runs no auth policy service.
	Listen string `yaml:"listen"`
	// AllowRemote lets Listen be other than loopback.
	AllowRemote bool `yaml:"allow_remote"`
	// APIKey, if set, must come with every request: Dovecot sends it as
	// auth_policy_server_api_header (a bare value as X-API-Key, or an
	// Authorization header).
	APIKey string `yaml:"api_key"`
	// TLSCert and TLSKey, if set, serve HTTPS.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// LoginHashKey keys the hash under which login names are stored; the
	// same on every node. Empty: an unkeyed hash.
	LoginHashKey string `yaml:"login_hash_key"`
	// Window is how far back failed logins count.
	Window time.Duration `yaml:"window"`
	// DelayAfter failures from an address, each further login from it is
	// delayed a second per failure, up to MaxDelay.
	DelayAfter int64         `yaml:"delay_after"`
	MaxDelay   time.Duration `yaml:"max_delay"`
	// BlockAfter failures from an address (NetworkBlockAfter from its
	// /24 or /64) block its logins for BlockFor.
	BlockAfter        int64         `yaml:"block_after"`
	NetworkBlockAfter int64         `yaml:"network_block_after"`
	BlockFor          time.Duration `yaml:"block_for"`
	// SprayAfter distinct login names failing from one address (password
	// spraying) block it.
	SprayAfter int64 `yaml:"spray_after"`
	// LoginBlockAfter failures of one login name, from anywhere
	// (distributed guessing), block that name from every Network it has
	// not logged in from within KnownKeep; its usual Networks still get
	// in.
	LoginBlockAfter int64         `yaml:"login_block_after"`
	KnownKeep       time.Duration `yaml:"known_keep"`
	// AllowNetworks are never throttled (the provider's own webmail,
	// monitoring).
	AllowNetworks []setting.Network `yaml:"allow_networks"`
	// MaxBody caps a request's body.
	MaxBody int64 `yaml:"max_body"`
}

// Default is the authpolicy: section's defaults.
func Default() Config {
	return Config{Window: 15 * time.Minute, DelayAfter: 3, MaxDelay: 10 * time.Second, BlockAfter: 15, NetworkBlockAfter: 60,
		BlockFor: 15 * time.Minute, SprayAfter: 6, LoginBlockAfter: 30, KnownKeep: 60 * 24 * time.Hour, MaxBody: 16 << 10}
}

// Check reports the problems of the authpolicy: section.
func (c Config) Check(p *setting.Problems) {
	if c.Listen != "" {
		if a, err := listener.ParseAddress(c.Listen, c.AllowRemote); err != nil {
			p.Add("listen", "%v", err)
		} else if a.Network != "tcp" {
			p.Add("listen", "%q: Dovecot reaches the auth policy service over HTTP: write inet:127.0.0.1:PORT", c.Listen)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		p.Add("tls_cert", "tls_cert and tls_key go together")
	}
	p.Positive("window", c.Window)
	p.Positive("block_for", c.BlockFor)
	p.Positive("known_keep", c.KnownKeep)
	if c.MaxDelay < 0 || c.MaxDelay > time.Minute {
		p.Add("max_delay", "must be 0 to 1m, got %v (Dovecot holds the login that long)", c.MaxDelay)
	}
	for key, v := range map[string]int64{"delay_after": c.DelayAfter, "block_after": c.BlockAfter, "network_block_after": c.NetworkBlockAfter,
		"spray_after": c.SprayAfter, "login_block_after": c.LoginBlockAfter} {
		if v < 1 {
			p.Add(key, "must be at least 1, got %d", v)
		}
	}
	if c.DelayAfter >= c.BlockAfter {
		p.Add("delay_after", "%d: delays start before the block (block_after %d)", c.DelayAfter, c.BlockAfter)
	}
	if c.MaxBody < 1024 || c.MaxBody > 1<<20 {
		p.Add("max_body", "must be 1 KiB to 1 MiB, got %d", c.MaxBody)
	}
}
