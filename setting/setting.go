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

// Network reads an IP address (a single address's prefix) or a CIDR
// prefix, as admins write networks.
func Network(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Networks checks a list of networks under key and returns those that
// parse.
func (p *Problems) Networks(key string, ss []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range ss {
		n, err := Network(s)
		if err != nil {
			p.Add(fmt.Sprintf("%s[%d]", key, i), "%v", err)
			continue
		}
		out = append(out, n)
	}
	return out
}
