package policyd

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Query is a policy request read once: the attributes the checks use,
// typed and normalised, with the problems found reading them.
// https://www.postfix.org/SMTPD_POLICY_README.html
type Query struct {
	State string // protocol_state: CONNECT, RCPT, END-OF-MESSAGE, ...
	// Context is the check_policy_service instance (policy_context): mx
	// or submission; without one, a request with a SASL login is
	// submission. UnknownContext holds a name that was neither (the
	// request then gets the MX checks).
	Context, UnknownContext string
	// Client is the client's address (IPv4-mapped addresses unmapped);
	// not valid when client_address was missing or not an address.
	Client    netip.Addr
	ClientErr error
	Helo      string
	Sender    string // MAIL FROM, lower case; "" for the null sender
	Recipient string // RCPT TO, lower case
	// RecipientCount is recipient_count (known at END-OF-MESSAGE); -1
	// when absent.
	RecipientCount int64
	User           string // sasl_username; "" when not logged in
	Instance       string // the SMTP transaction
}

// ErrNotPolicy is a request that is not an smtpd_access_policy request.
var ErrNotPolicy = errors.New("not an smtpd_access_policy request")

// ParseQuery reads the attributes of req.
func ParseQuery(req Request) (Query, error) {
	if req.Get("request") != "smtpd_access_policy" {
		return Query{}, ErrNotPolicy
	}
	q := Query{State: req.Get("protocol_state"), Helo: req.Get("helo_name"),
		Sender: strings.ToLower(req.Get("sender")), Recipient: strings.ToLower(req.Get("recipient")),
		User: req.Get("sasl_username"), Instance: req.Get("instance"), RecipientCount: -1}
	switch c := req.Get("policy_context"); c {
	case "mx", "submission":
		q.Context = c
	case "":
		q.Context = "mx"
		if q.User != "" {
			q.Context = "submission"
		}
	default:
		// Only the two contexts exist (and become metric labels).
		q.Context, q.UnknownContext = "mx", c
	}
	if a, err := netip.ParseAddr(req.Get("client_address")); err == nil {
		q.Client = a.Unmap()
	} else {
		q.ClientErr = fmt.Errorf("client_address %q is not an IP address", req.Get("client_address"))
	}
	if n, err := strconv.ParseInt(req.Get("recipient_count"), 10, 64); err == nil {
		q.RecipientCount = n
	}
	return q, nil
}

// SenderDomain is the domain of the MAIL FROM address, or "".
func (q Query) SenderDomain() string {
	if i := strings.LastIndexByte(q.Sender, '@'); i >= 0 {
		return q.Sender[i+1:]
	}
	return ""
}
