package mailauth

import (
	"context"
	"net"
	"strings"
)

// iprev result values (RFC 8601 3).
const (
	IPRevPass      = "pass"
	IPRevFail      = "fail"
	IPRevNone      = "none"
	IPRevTempError = "temperror"
	IPRevPermError = "permerror"
)

// IPRevResult is the forward-confirmed reverse DNS of the client.
type IPRevResult struct {
	Result string `json:"result"`
	// Name is the confirmed name on pass, the first PTR name on fail.
	Name  string `json:"name"`
	IP    string `json:"-"` // the client address, for policy.iprev
	Error string `json:"-"`
}

// maxPTRNames caps the PTR names checked (as RFC 7208 4.6.4 does for ptr).
const maxPTRNames = 10

// CheckIPRev checks that a PTR name of ip resolves back to ip (RFC 8601
// 3): pass if one does, fail if none does, permerror when there is no
// PTR record, temperror on DNS trouble.
func CheckIPRev(ctx context.Context, res Resolver, ip net.IP) IPRevResult {
	if ip == nil {
		return IPRevResult{Result: IPRevNone}
	}
	r := checkIPRev(ctx, res, ip)
	r.IP = ip.String()
	return r
}

func checkIPRev(ctx context.Context, res Resolver, ip net.IP) IPRevResult {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return IPRevResult{Result: IPRevPermError, Error: "no PTR record for " + ip.String()}
		}
		return IPRevResult{Result: IPRevTempError, Error: err.Error()}
	}
	if len(names) > maxPTRNames {
		names = names[:maxPTRNames]
	}
	var tempErr error
	for _, n := range names {
		addrs, err := res.LookupIPAddr(ctx, n)
		if err != nil {
			if de, ok := err.(*net.DNSError); !ok || !de.IsNotFound {
				tempErr = err
			}
			continue
		}
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				return IPRevResult{Result: IPRevPass, Name: strings.TrimSuffix(n, ".")}
			}
		}
	}
	if tempErr != nil {
		return IPRevResult{Result: IPRevTempError, Error: tempErr.Error()}
	}
	r := IPRevResult{Result: IPRevFail, Error: "no PTR name of " + ip.String() + " resolves back to it"}
	if len(names) > 0 {
		r.Name = strings.TrimSuffix(names[0], ".")
	}
	return r
}
