package listener

import (
	"fmt"
	"io/fs"
	"strconv"

	"github.com/wehr/wehr/setting"
)

// Settings are where a daemon listens, as its section of the
// configuration file (milter:, policyd:) says.
type Settings struct {
	// Listen is unix:/absolute/path or inet:HOST:PORT (the libmilter
	// forms inet:PORT@HOST and local:/path too).
	Listen string `yaml:"listen"`
	// AllowRemote lets an inet address be other than loopback.
	AllowRemote bool `yaml:"allow_remote"`
	// SocketMode, SocketOwner and SocketGroup are a unix socket's
	// permissions: octal mode, user and group names or ids.
	SocketMode  string `yaml:"socket_mode"`
	SocketOwner string `yaml:"socket_owner"`
	SocketGroup string `yaml:"socket_group"`
}

// Check reports the problems of these keys.
func (s Settings) Check(p *setting.Problems) {
	if _, err := ParseAddress(s.Listen, s.AllowRemote); err != nil {
		p.Add("listen", "%v", err)
	}
	if _, err := parseMode(s.SocketMode); err != nil {
		p.Add("socket_mode", "%v", err)
	}
}

// Address is where to listen: override (a --listen flag), if not empty,
// replaces Listen.
func (s Settings) Address(override string) (Address, SocketPerms, error) {
	l := s.Listen
	if override != "" {
		l = override
	}
	a, err := ParseAddress(l, s.AllowRemote)
	if err != nil {
		return a, SocketPerms{}, err
	}
	mode, _ := parseMode(s.SocketMode)
	return a, SocketPerms{Mode: mode, Owner: s.SocketOwner, Group: s.SocketGroup}, nil
}

// CheckOwner checks, at start, that the socket's owner and group exist;
// the error names the section's key.
func (s Settings) CheckOwner(section string) error {
	if err := CheckOwner(s.SocketOwner, s.SocketGroup); err != nil {
		return fmt.Errorf("%s.socket_group: %w (the group Postfix runs as must exist; with Postfix installed it is postfix)", section, err)
	}
	return nil
}

func parseMode(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode such as 0660", s)
	}
	return fs.FileMode(v), nil
}
