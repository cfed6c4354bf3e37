package policyd

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/spf"
	"github.com/wehr/wehr/store"
)

// greylistCheck greylists a suspicious client (score at or above
// policyd.suspicious_score): the first attempt of a (network, sender,
// recipient) triplet gets 450, a retry after the delay passes. Networks
// that passed often enough, and big senders whose SPF passes, are not
// greylisted.
type greylistCheck struct{}

func (greylistCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	p := ev.p
	g := p.cfg.Greylist
	if ev.d.Score < p.cfg.SuspiciousScore || !g.Enabled || !ev.store() {
		return nil
	}
	client := ev.q.Client
	network := store.Network(client)
	if dom := ev.q.SenderDomain(); p.spfAllowlisted(dom) {
		r := p.spf.CheckMailFrom(ctx, net.IP(client.AsSlice()), ev.q.Helo, ev.q.Sender)
		if r.Result == spf.Pass {
			ev.note("greylist", 0, "not greylisted: SPF passes for "+dom+", an allowlisted sender domain")
			return nil
		}
	}
	st := ev.clientState(ctx)
	if st.err != nil {
		ev.storeFailed("greylist", st.err)
		return nil
	}
	allowlisted := func() *smtpreply.Reply {
		ev.note("greylist", 0, fmt.Sprintf("not greylisted: %s passed greylisting %d times", network, st.passes()))
		return nil
	}
	t, policy := ev.triplet(), p.greylistPolicy()
	var e store.GreylistEntry
	if st.attempt != nil {
		var made bool
		if e, made = st.attempt(); !made {
			return allowlisted()
		}
	} else {
		if g.AllowlistAfter > 0 && st.passes() >= g.AllowlistAfter {
			return allowlisted()
		}
		var err error
		if e, err = p.grey.Attempt(ctx, t, ev.now, policy); err != nil {
			ev.storeFailed("greylist", err)
			return nil
		}
	}
	if e.Passed {
		ev.note("greylist", 0, fmt.Sprintf("passed greylisting (first seen %s)", e.First.UTC().Format(time.RFC3339)))
		if e.Count == 1 {
			p.grey.AddPass(ctx, network, g.Keep) //nolint:errcheck // best effort
			p.reputation(ctx, client, true)
		}
		return nil
	}
	wait := max(int(e.Wait(ev.now, policy).Seconds()+0.999), 1)
	ev.note("greylist", 0, fmt.Sprintf("greylisted %s until %s", t, e.First.Add(g.Delay).UTC().Format(time.RFC3339)))
	return reply(450, "4.7.1", fmt.Sprintf("Greylisted: please retry in %d seconds", wait), "greylist")
}

// spfAllowlisted says whether a sender domain is one of (or under one
// of) greylist.spf_domains: not greylisted when SPF passes.
func (p *Pipeline) spfAllowlisted(dom string) bool {
	if dom == "" {
		return false
	}
	for _, a := range p.cfg.Greylist.SPFDomains { // lower-cased by NewPipeline
		if dom == a || strings.HasSuffix(dom, "."+a) {
			return true
		}
	}
	return false
}

// triplet is the request's greylisting key.
func (ev *evaluation) triplet() store.Triplet {
	return store.Triplet{Network: store.Network(ev.q.Client), Sender: NormalizeSender(ev.q.Sender), Recipient: ev.q.Recipient}
}

func (p *Pipeline) greylistPolicy() store.GreylistPolicy {
	g := p.cfg.Greylist
	return store.GreylistPolicy{Delay: g.Delay, Window: g.Window, Keep: g.Keep}
}

var (
	batv = regexp.MustCompile(`^(prvs|btv1|msprvs1)=[^=]*=`)
	srs  = regexp.MustCompile(`^srs[01][=+-][^=]+=[^=]+=([^=]+)=(.+)$`)
)

// hashDigits replaces each run of digits with "#".
func hashDigits(s string) string {
	if !strings.ContainsAny(s, "0123456789") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '0' || c > '9' {
			b = append(b, c)
		} else if i == 0 || s[i-1] < '0' || s[i-1] > '9' {
			b = append(b, '#')
		}
	}
	return string(b)
}

// NormalizeSender makes the greylisting key of a sender: bounce address
// tags (BATV prvs=), SRS rewriting and VERP-style numbers vary between
// retries of the same message and must not restart greylisting
// (postgrey does the same).
func NormalizeSender(s string) string {
	s = strings.ToLower(s)
	local, domain, ok := strings.Cut(s, "@")
	if !ok {
		return s
	}
	if strings.IndexByte(local, '=') >= 0 { // BATV and SRS have one
		local = batv.ReplaceAllString(local, "")
		if m := srs.FindStringSubmatch(local); m != nil {
			return hashDigits(m[2]) + "@" + m[1]
		}
	}
	return hashDigits(local) + "@" + domain
}
