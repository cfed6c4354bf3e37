package dkimkeys

import (
	"os"
	"path/filepath"
	"time"

	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/setting"
)

// Config is the dkim: section of the configuration file: the signing
// keys and their rotation, who may sign as whom, what the signer does
// when it may not, and the verifier's signature cap.
type Config struct {
	// MaxSignatures caps the DKIM signatures verified per message.
	MaxSignatures int `yaml:"max_signatures"`
	// KeysDir holds the private keys, <dir>/<domain>/<selector>.pem
	// (empty: outbound mail is not signed).
	KeysDir string `yaml:"keys_dir"`
	// SenderMap is the file that says who may send as which addresses
	// (package sendermap).
	SenderMap string `yaml:"sender_map"`
	// UnauthorizedSender is unsigned (default) or refuse (553 5.7.1):
	// outbound mail whose From the sender may not use.
	UnauthorizedSender string `yaml:"unauthorized_sender"`
	// OnKeyError is tempfail (default) or unsigned: outbound mail of a
	// domain whose key file is broken.
	OnKeyError string `yaml:"on_key_error"`
	// RotationOverlap is how long both keys sign during a rotation;
	// RotationCheck how often rotations are moved on.
	RotationOverlap time.Duration `yaml:"rotation_overlap"`
	RotationCheck   time.Duration `yaml:"rotation_check"`
}

// DefaultConfig is the dkim: section's defaults.
func DefaultConfig() Config {
	return Config{MaxSignatures: 5, UnauthorizedSender: "unsigned", OnKeyError: "tempfail",
		RotationOverlap: 7 * 24 * time.Hour, RotationCheck: time.Hour}
}

// Check reports the problems of the dkim: section.
func (c Config) Check(p *setting.Problems) {
	if c.MaxSignatures < 1 || c.MaxSignatures > 50 {
		p.Add("max_signatures", "must be 1 to 50, got %d", c.MaxSignatures)
	}
	if d := c.KeysDir; d != "" {
		if !filepath.IsAbs(d) {
			p.Add("keys_dir", "%q must be an absolute path", d)
		} else if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			p.Add("keys_dir", "%q is not a directory (create it with mode 0700, owned by the user wehr runs as)", d)
		}
	}
	if f := c.SenderMap; f != "" {
		if _, err := sendermap.Load(f); err != nil {
			p.Add("sender_map", "%v", err)
		}
	}
	p.OneOf("unauthorized_sender", c.UnauthorizedSender, "unsigned", "refuse")
	p.OneOf("on_key_error", c.OnKeyError, "tempfail", "unsigned")
	p.Positive("rotation_overlap", c.RotationOverlap)
	p.Positive("rotation_check", c.RotationCheck)
}
