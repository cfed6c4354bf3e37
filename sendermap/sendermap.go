// Package sendermap says who may send as which addresses: an
// authenticated (SASL) user, or a client network for unauthenticated
// trusted clients (web servers relaying through mynetworks), is allowed a
// list of addresses and domains. The milter signs only for From addresses
// the sender may use, and the policy daemon's sender-login check reads the
// same map: one customer never gets DKIM or DMARC passes for another's
// domain.
//
// The file has one entry per line: a user name (as SASL reports it), an IP
// address or a CIDR prefix, then the addresses it may use, separated by
// spaces or commas:
//
//	alice@example.test   alice@example.test, @example.test
//	shop                 shop.example.org .shop.example.org
//	192.0.2.0/24         example.net
//
// An address entry is local@domain (that address), @domain or domain (any
// address of that domain), .domain (any address of a subdomain), or *
// (anything: a relay you trust). Blank lines and # comments are ignored.
package sendermap

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/wehr/wehr/smtpreply"
)

// Map is a parsed sender map. It is immutable; Holder swaps maps.
type Map struct {
	users map[string][]string // lower-case user → rules
	nets  []netRule
	Size  int // entries
}

type netRule struct {
	prefix netip.Prefix
	rules  []string
}

// Load reads a sender map file.
func Load(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sendermap: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a sender map; name labels errors.
func Parse(name string, r io.Reader) (*Map, error) {
	m := &Map{users: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' })
		if len(fields) == 0 {
			continue
		}
		if len(fields) == 1 {
			return nil, fmt.Errorf("sendermap: %s:%d: %q has no addresses", name, n, fields[0])
		}
		var rules []string
		for _, r := range fields[1:] {
			rule, err := checkRule(r)
			if err != nil {
				return nil, fmt.Errorf("sendermap: %s:%d: %v", name, n, err)
			}
			rules = append(rules, rule)
		}
		who := fields[0]
		if p, ok := parseNetwork(who); ok {
			m.nets = append(m.nets, netRule{prefix: p, rules: rules})
		} else {
			key := strings.ToLower(who)
			m.users[key] = append(m.users[key], rules...)
		}
		m.Size++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sendermap: %s: %w", name, err)
	}
	return m, nil
}

func parseNetwork(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// checkRule validates and normalises one address rule.
func checkRule(r string) (string, error) {
	r = strings.ToLower(r)
	if r == "*" {
		return r, nil
	}
	local, domain, hasAt := strings.Cut(r, "@")
	if !hasAt {
		domain, local = r, ""
	}
	d := strings.TrimPrefix(domain, ".")
	if d == "" || !strings.Contains(d, ".") && !strings.HasPrefix(domain, ".") || strings.ContainsAny(d, " <>\"") || strings.Contains(d, "..") {
		return "", fmt.Errorf("%q is not an address, @domain, domain, .domain or *", r)
	}
	if hasAt && local != "" {
		return local + "@" + domain, nil
	}
	return "@" + domain, nil
}

// matches reports whether addr (lower-case local@domain) fits rule.
func matches(rule, addr string) bool {
	if rule == "*" {
		return true
	}
	_, domain, _ := strings.Cut(addr, "@")
	if strings.HasPrefix(rule, "@.") {
		return strings.HasSuffix(domain, rule[1:])
	}
	if strings.HasPrefix(rule, "@") {
		return domain == rule[1:]
	}
	return addr == rule
}

// Allowed reports whether the sender may use addr: an authenticated user
// by the user's entries (network entries do not apply to them), else the
// client address by the network entries. why says which entry decided,
// or what was missing.
func (m *Map) Allowed(user string, client net.IP, addr string) (ok bool, why string) {
	a := strings.ToLower(strings.Trim(addr, "<> "))
	if !strings.Contains(a, "@") {
		return false, fmt.Sprintf("%q is not an address", addr)
	}
	if user != "" {
		rules, found := m.users[strings.ToLower(user)]
		if !found {
			return false, "user " + user + " has no entry in the sender map"
		}
		for _, r := range rules {
			if matches(r, a) {
				return true, "user " + user + " may use " + r
			}
		}
		return false, "user " + user + " may not use " + a
	}
	ip, okIP := netip.AddrFromSlice(client)
	if client == nil || !okIP {
		return false, "no client address and no authenticated user"
	}
	ip = ip.Unmap()
	found := false
	for _, n := range m.nets {
		if !n.prefix.Contains(ip) {
			continue
		}
		found = true
		for _, r := range n.rules {
			if matches(r, a) {
				return true, "network " + n.prefix.String() + " may use " + r
			}
		}
	}
	if !found {
		return false, "client " + ip.String() + " is in no network of the sender map"
	}
	return false, "client " + ip.String() + " may not use " + a
}

// Holder holds the current map and swaps in a new one on Reload, so that
// readers never see half a file.
type Holder struct {
	path string
	cur  atomic.Pointer[Map]
}

// NewHolder loads path.
func NewHolder(path string) (*Holder, error) {
	h := &Holder{path: path}
	return h, h.Reload()
}

// Reload reads the file again; on error the old map stays.
func (h *Holder) Reload() error {
	m, err := Load(h.path)
	if err != nil {
		return err
	}
	h.cur.Store(m)
	return nil
}

// Map returns the current map.
func (h *Holder) Map() *Map { return h.cur.Load() }

// Path is the file the holder reads.
func (h *Holder) Path() string { return h.path }

// Refusal is the reply to a sender that may not use addr: user is the
// SASL login, or "" for an unauthenticated trusted client, then named by
// client. The policy service (MAIL FROM, policyd.submission.sender_login)
// and the milter (the From header, dkim.unauthorized_sender: refuse)
// send the same words under the same check name.
func Refusal(user, client, addr string) smtpreply.Reply {
	who := "user " + user
	if user == "" {
		who = "client " + client
	}
	return smtpreply.Reply{Code: 553, Enhanced: "5.7.1", Check: "sender_map",
		Text: fmt.Sprintf("%s may not send as <%s>; use an address of your own", who, strings.ToLower(strings.Trim(addr, "<> ")))}
}
