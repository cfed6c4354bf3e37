// Package iprev checks a client's forward-confirmed reverse DNS (RFC
// 8601 3, "iprev"): a PTR name of the address that resolves back to it.
package iprev

import (
	"context"
	"net"
	"strings"
)

// Result is an iprev result word, as Authentication-Results writes it
// (RFC 8601 2.7.3).
type Result string

// The iprev results.
const (
	Pass      Result = "pass"
	Fail      Result = "fail"
	None      Result = "none"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// Resolver is what the check asks of DNS; it must return errors as a
// bare *net.DNSError (see package resolver).
type Resolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Outcome is the forward-confirmed reverse DNS of the client.
type Outcome struct {
	Result Result `json:"result"`
	// Name is the confirmed name on pass, the first PTR name on fail.
	Name  string `json:"name"`
	IP    string `json:"-"` // the client address, for policy.iprev
	Error string `json:"-"`
}

// MaxPTRNames caps the PTR names checked (as RFC 7208 4.6.4 does for ptr).
const MaxPTRNames = 10

// Check checks that a PTR name of ip resolves back to ip (RFC 8601
// 3): pass if one does, fail if none does, permerror when there is no
// PTR record, temperror on DNS trouble.
func Check(ctx context.Context, res Resolver, ip net.IP) Outcome {
	if ip == nil {
		return Outcome{Result: None}
	}
	r := check(ctx, res, ip)
	r.IP = ip.String()
	return r
}

func check(ctx context.Context, res Resolver, ip net.IP) Outcome {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return Outcome{Result: PermError, Error: "no PTR record for " + ip.String()}
		}
		return Outcome{Result: TempError, Error: err.Error()}
	}
	if len(names) > MaxPTRNames {
		names = names[:MaxPTRNames]
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
				return Outcome{Result: Pass, Name: strings.TrimSuffix(n, ".")}
			}
		}
	}
	if tempErr != nil {
		return Outcome{Result: TempError, Error: tempErr.Error()}
	}
	r := Outcome{Result: Fail, Error: "no PTR name of " + ip.String() + " resolves back to it"}
	if len(names) > 0 {
		r.Name = strings.TrimSuffix(names[0], ".")
	}
	return r
}
