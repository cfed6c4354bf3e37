// Package setting is what each package's section of the configuration
// file uses to check its values: problems named by their key path
// ("dns.timeout"), all of them at once. Package config reads the file,
// finds each key's line and prints FILE:LINE: key: message.
package setting

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// Problem is one bad value.
type Problem struct {
	Key string // dotted path, e.g. dns.timeout
	Msg string
}

// Problems collects the problems of a section, under its key path.
type Problems struct {
	prefix string
	list   *[]Problem
}

// New starts an empty collection at the top of the file.
func New() *Problems { return &Problems{list: new([]Problem)} }

// Section returns the collection for a subsection name ("dns",
// "greylist", "dns_lists[2]").
func (p *Problems) Section(name string) *Problems {
	return &Problems{prefix: p.key(name), list: p.list}
}

func (p *Problems) key(k string) string {
	switch {
	case p.prefix == "":
		return k
	case k == "" || strings.HasPrefix(k, "["):
		return p.prefix + k
	}
	return p.prefix + "." + k
}

// Add records a problem with key (relative to the section; "" for the
// section itself).
func (p *Problems) Add(key, format string, args ...any) {
	*p.list = append(*p.list, Problem{Key: p.key(key), Msg: fmt.Sprintf(format, args...)})
}

// List returns every problem recorded, in the order found.
func (p *Problems) List() []Problem { return *p.list }

// Positive checks a duration that must be above zero.
func (p *Problems) Positive(key string, d time.Duration) {
	if d <= 0 {
		p.Add(key, "must be positive, got %v", d)
	}
}

// OneOf checks a value that must be one of allowed.
func (p *Problems) OneOf(key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.Add(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

// ParseNetwork reads an IP address (a single address's prefix) or a
// CIDR prefix, as admins write networks.
func ParseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Network is a network as admins write it in the file: a CIDR prefix, or
// one address. Its methods are netip.Prefix's.
type Network struct{ netip.Prefix }

// UnmarshalText reads a network, with an error that says what is wrong.
func (n *Network) UnmarshalText(b []byte) error {
	p, err := ParseNetwork(string(b))
	if err != nil {
		return err
	}
	n.Prefix = p
	return nil
}

// Networks makes a list of networks from their text (for defaults and
// tests); it panics on a bad one.
func Networks(ss ...string) []Network {
	var out []Network
	for _, s := range ss {
		p, err := ParseNetwork(s)
		if err != nil {
			panic(err)
		}
		out = append(out, Network{p})
	}
	return out
}

// Contains reports whether any of nets contains a, and which.
func Contains(nets []Network, a netip.Addr) (netip.Prefix, bool) {
	a = a.Unmap()
	for _, n := range nets {
		if n.Prefix.Contains(a) {
			return n.Prefix, true
		}
	}
	return netip.Prefix{}, false
}

// Domains checks a list of domain names under key: each must have a dot
// and be a name (U-labels are taken, as IDNA allows).
func (p *Problems) Domains(key string, ds []string) {
	for i, d := range ds {
		if !IsDomain(d) {
			p.Add(fmt.Sprintf("%s[%d]", key, i), "%q is not a domain name", d)
		}
	}
}

// IsDomain says whether d is a domain name with a dot.
func IsDomain(d string) bool {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	if !strings.Contains(d, ".") || strings.ContainsAny(d, " \t\\\"<>()[],;:@") {
		return false
	}
	_, err := idna.Lookup.ToASCII(d)
	return err == nil
}
