package policyd

import (
	"context"
	"net/netip"
	"strings"

	"github.com/wehr/wehr/smtpreply"
)

// heloCheck scores the HELO name.
type heloCheck struct{}

func (heloCheck) run(_ context.Context, ev *evaluation) *smtpreply.Reply {
	if s, notes := ev.p.heloProblems(ev.q.Helo, ev.q.Client); s != 0 {
		ev.note("helo", s, strings.Join(notes, "; "))
	}
	return nil
}

// heloProblems scores a HELO name: empty, a bare IP, not a domain, or
// claiming to be us.
func (p *Pipeline) heloProblems(helo string, client netip.Addr) (score float64, notes []string) {
	w := p.cfg.Weights
	h := strings.ToLower(strings.TrimSuffix(helo, "."))
	switch {
	case h == "":
		return w.HeloInvalid, []string{"no HELO name"}
	case strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]"):
		lit := strings.TrimPrefix(strings.Trim(h, "[]"), "ipv6:")
		if a, err := netip.ParseAddr(lit); err != nil || a.Unmap() != client {
			return w.HeloInvalid, []string{"HELO address literal " + helo + " is not the client's address"}
		}
		return 0, nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return w.HeloInvalid, []string{"HELO is a bare IP address, not a name or [literal]"}
	}
	if !strings.Contains(h, ".") || strings.ContainsAny(h, " _/\\@") {
		return w.HeloInvalid, []string{"HELO " + helo + " is not a fully qualified domain name"}
	}
	if h == strings.ToLower(p.cfg.Hostname) {
		return w.HeloClaimsUs, []string{"HELO claims to be this server (" + helo + ")"}
	}
	for _, d := range p.cfg.LocalDomains {
		if h == strings.ToLower(d) {
			return w.HeloClaimsUs, []string{"HELO claims to be one of our domains (" + helo + ")"}
		}
	}
	return 0, nil
}
