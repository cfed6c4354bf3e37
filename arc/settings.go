package arc

import (
	"strings"

	"github.com/wehr/wehr/setting"
)

// Sealing modes.
const (
	SealOff   = "off"
	SealAll   = "all"   // every inbound message we accept
	SealRelay = "relay" // those with a recipient outside LocalDomains
)

// Config is the arc: section of the configuration file: whether and
// as whom inbound mail that we pass on is sealed. (Verification is
// always on; which sealers are trusted is dmarc.trusted_forwarders.)
type Config struct {
	// Seal is off, all or relay.
	Seal string `yaml:"seal"`
	// SealDomain signs our ARC sets with its active key from the DKIM
	// key store (dkim.keys_dir).
	SealDomain string `yaml:"seal_domain"`
	// LocalDomains are the domains whose mail is delivered here (relay
	// mode seals the rest).
	LocalDomains []string `yaml:"local_domains"`
}

// Default is the arc: section's defaults.
func Default() Config { return Config{Seal: SealOff} }

// Check reports the problems of the arc: section.
func (c Config) Check(p *setting.Problems) {
	p.OneOf("seal", c.Seal, SealOff, SealAll, SealRelay)
	if c.Seal != SealOff && !setting.IsDomain(c.SealDomain) {
		p.Add("seal_domain", "%q: sealing needs the domain whose DKIM key signs the seals", c.SealDomain)
	}
	if c.Seal == SealRelay && len(c.LocalDomains) == 0 {
		p.Add("local_domains", "relay mode needs the domains delivered here (the others are sealed)")
	}
	p.Domains("local_domains", c.LocalDomains)
}

// Wants says whether a message for rcpts is sealed.
func (c Config) Wants(rcpts []string) bool {
	switch c.Seal {
	case SealAll:
		return true
	case SealRelay:
		for _, r := range rcpts {
			r = strings.Trim(r, "<> ")
			d := strings.ToLower(r[strings.LastIndexByte(r, '@')+1:])
			local := false
			for _, l := range c.LocalDomains {
				if strings.EqualFold(d, l) {
					local = true
				}
			}
			if !local {
				return true
			}
		}
	}
	return false
}
