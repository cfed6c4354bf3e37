package policyd

import (
	"context"
	"fmt"
	"strings"

	"github.com/wehr/wehr/smtpreply"
)

// The MX checks, in order. The rates come first (a client over its cap
// costs no lookup); the DNS lists and reverse DNS then start at once;
// the findings add to a score that refuses (reject_score) or greylists
// (suspicious_score).
var (
	mxConnectChecks = []check{rateCheck{connect: true}}
	mxRcptChecks    = []check{rateCheck{}, dnsblCheck{}, heloCheck{}, fcrdnsCheck{}, dynamicCheck{}, reputationCheck{},
		scoreCheck{}, greylistCheck{}, storeDownCheck{}}
)

// mx evaluates a request of the MX context.
func (p *Pipeline) mx(ctx context.Context, ev *evaluation) Decision {
	q := ev.q
	// A logged-in client never meets the MX checks, whatever the
	// context: a paying customer on a dynamic (PBL-listed) address with
	// HELO "laptop" would be refused or greylisted. The submission
	// checks run where the submission context asks for them (running
	// them here too would count each recipient twice).
	if q.User != "" {
		ev.note("context", 0, fmt.Sprintf("authenticated client (sasl_username %s): MX checks skipped in policy_context %s", q.User, q.Context))
		return ev.decision(nil)
	}
	if q.ClientErr != nil {
		ev.note("protocol", 0, "no usable client_address")
		return ev.decision(nil)
	}
	for _, n := range p.cfg.SkipNetworks {
		if n.Contains(q.Client) {
			ev.note("context", 0, "client in skip_networks "+n.String())
			return ev.decision(nil)
		}
	}
	switch q.State {
	case "CONNECT":
		return ev.decision(ev.run(ctx, mxConnectChecks))
	case "RCPT":
	default:
		ev.note("context", 0, "MX checks run at RCPT, not "+q.State)
		return ev.decision(nil)
	}
	if why := p.exempt(q.Recipient); why != "" {
		ev.note("exempt", 0, why)
		return ev.decision(nil)
	}
	return ev.decision(ev.run(ctx, mxRcptChecks))
}

// exempt says why a recipient skips the checks, or "".
func (p *Pipeline) exempt(rcpt string) string {
	local, domain, ok := strings.Cut(rcpt, "@")
	if !ok {
		return ""
	}
	if local == "postmaster" || local == "abuse" {
		if len(p.cfg.LocalDomains) == 0 {
			return local + "@ is always accepted"
		}
		for _, d := range p.cfg.LocalDomains {
			if strings.EqualFold(d, domain) {
				return local + "@ of a local domain is always accepted"
			}
		}
	}
	for _, e := range p.cfg.ExemptRecipients {
		e = strings.ToLower(e)
		if e == rcpt || (strings.HasPrefix(e, "@") && e[1:] == domain) {
			return "recipient " + rcpt + " is exempt (" + e + ")"
		}
	}
	return ""
}

// scoreCheck refuses a client whose findings reach reject_score, naming
// the blocklists that list it, or else every finding that scored.
type scoreCheck struct{}

func (scoreCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	p, client := ev.p, ev.q.Client
	if ev.d.Score < p.cfg.RejectScore {
		return nil
	}
	text := fmt.Sprintf("Service unavailable; client [%s] is refused", client)
	check := "score"
	if len(ev.listedOn) > 0 {
		text = fmt.Sprintf("Service unavailable; client [%s] is listed on %s", client, strings.Join(ev.listedOn, ", "))
		check = "dnsbl"
	} else {
		var why []string
		for _, c := range ev.d.Contributions {
			if c.Score > 0 {
				why = append(why, c.Note)
			}
		}
		text += ": " + strings.Join(why, "; ")
	}
	if p.cfg.ReferenceURL != "" {
		text += "; see " + p.cfg.ReferenceURL
	}
	p.reputation(ctx, client, false)
	return reply(554, "5.7.1", text, check)
}

// storeDownCheck answers 451 when the store failed and
// policyd.on_store_error is tempfail; otherwise the request goes on
// without what the store would have said (DUNNO, check "store").
type storeDownCheck struct{}

func (storeDownCheck) run(_ context.Context, ev *evaluation) *smtpreply.Reply {
	if ev.storeDown && ev.p.cfg.OnStoreError == "tempfail" {
		return reply(451, "4.3.0", "Temporary local problem; please try again later", "store")
	}
	return nil
}
