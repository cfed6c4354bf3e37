// Package mailauth is wehr's verdict engine: it authenticates a message
// from its envelope (client IP, HELO, MAIL FROM, RCPT TO, authenticated
// user) and content, with SPF (RFC 7208), and produces the results the
// milter writes into Authentication-Results and the CLI prints.
//
// It knows nothing of milters, Postfix or the policy protocol, and does
// all DNS through the Resolver it is given.
package mailauth

import (
	"context"

	"github.com/wehr/wehr/spf"
)

// Resolver is what the engine asks of DNS. *resolver.Resolver is one; it
// must return errors as a bare *net.DNSError (see package resolver).
type Resolver interface {
	spf.Resolver
	// Exists reports whether a name exists: false only on NXDOMAIN
	// (RFC 8020).
	Exists(ctx context.Context, name string) (bool, error)
}
