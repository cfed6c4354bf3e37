package policyd

import (
	"context"
	"regexp"
	"strings"

	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/smtpreply"
)

// dynamicCheck scores a confirmed reverse name that looks like an access
// network's (dial-up, DSL, cable), where mail servers do not live.
type dynamicCheck struct{}

func (dynamicCheck) start(ctx context.Context, ev *evaluation) { ev.iprev.start(ctx, ev) }

func (dynamicCheck) run(_ context.Context, ev *evaluation) *smtpreply.Reply {
	if rev := ev.iprev.wait(); rev.Result == iprev.Pass && looksDynamic(rev.Name) {
		ev.note("rdns", ev.p.cfg.Weights.Dynamic, "reverse name "+rev.Name+" looks dynamic")
	}
	return nil
}

// dynamicName matches reverse names that look like a dynamic or access
// network: the address in the name, or the words providers use.
var dynamicName = regexp.MustCompile(`(?i)(\d{1,3}[-.x]\d{1,3}[-.x]\d{1,3}[-.x]\d{1,3})|(^|[.-])(dyn|dynamic|dhcp|pool|ppp|pppoe|dsl|adsl|xdsl|vdsl|cable|dialup|dial-up|broadband|cust|customer|client|resid|res|home|user|host\d+|ip\d+)[0-9.-]`)

// looksDynamic reports whether a verified reverse name looks like an
// end-user access network, where mail servers do not live.
func looksDynamic(name string) bool {
	n := strings.ToLower(name)
	if strings.Contains(n, "static") || strings.HasPrefix(n, "mail") || strings.HasPrefix(n, "mx") || strings.HasPrefix(n, "smtp") {
		return false
	}
	return dynamicName.MatchString(n)
}
