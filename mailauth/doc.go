// Package mailauth is wehr's verdict engine: it authenticates a message
// from its envelope (client IP, HELO, MAIL FROM, RCPT TO, authenticated
// user) and content, with SPF (RFC 7208), and produces the results the
// milter writes into Authentication-Results and the CLI prints.
//
// It knows nothing of milters, Postfix or the policy protocol, and does
// all DNS through the Resolver it is given.
package mailauth
