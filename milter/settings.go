package milter

import (
	"fmt"
	"os"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/setting"
)

// Default is the milter: section's defaults.
func Default() Config {
	return Config{
		Settings:             listener.Settings{Listen: "unix:/var/spool/postfix/wehr/milter.sock", SocketMode: "0660", SocketGroup: "postfix"},
		TrustedNetworks:      setting.Networks("127.0.0.0/8", "::1/128"),
		OutboundDaemons:      []string{"ORIGINATING"},
		Quarantine:           QuarantineHeader,
		QuarantineHeaderName: "X-Wehr-Quarantine",
		BodyMemory:           1 << 20,
		Timeout:              30 * time.Second,
		IdleTimeout:          10 * time.Minute,
		MaxConnections:       500,
	}
}

// Check reports the problems of the milter: section.
func (c Config) Check(p *setting.Problems) {
	c.Settings.Check(p)
	for i, id := range c.ExtraAuthservIDs {
		if err := authres.CheckID(id); err != nil {
			p.Add(fmt.Sprintf("extra_authserv_ids[%d]", i), "%v", err)
		}
	}
	p.OneOf("quarantine", c.Quarantine, QuarantineHeader, QuarantineHold)
	if !mailauth.ValidFieldName(c.QuarantineHeaderName) {
		p.Add("quarantine_header", "%q is not a header field name", c.QuarantineHeaderName)
	}
	if c.BodyMemory < 0 {
		p.Add("body_memory", "must not be negative")
	}
	if c.TempDir != "" {
		if fi, err := os.Stat(c.TempDir); err != nil || !fi.IsDir() {
			p.Add("temp_dir", "%q is not a directory", c.TempDir)
		}
	}
	p.Positive("timeout", c.Timeout)
	if c.IdleTimeout < 5*time.Minute {
		p.Add("idle_timeout", "%v: keep it above Postfix's smtpd_timeout (300s), or Postfix sees its milter gone mid-session", c.IdleTimeout)
	}
	if c.MaxConnections < 1 {
		p.Add("max_connections", "must be at least 1, got %d", c.MaxConnections)
	}
}
