package store

import "net/netip"

// Network is the unit of network-wide state: a client's /24 (IPv4) or
// /64 (IPv6, where one customer gets a /64). Greylisting, reputation,
// rates and pass history count networks with it, and the rule lives only
// here, so the daemons and the ops commands cannot disagree on it.
func Network(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// ParseNetwork reads what an admin types for a network: a CIDR prefix
// (masked), or one address, which stands for its Network.
func ParseNetwork(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	return Network(a), true
}
