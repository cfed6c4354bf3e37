package policyd

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// reputationCheck scores a client, or its network, refused more often
// than passed before (store.Reputation, shared by every MX). It makes
// the request's one store round trip (clientState).
type reputationCheck struct{}

func (reputationCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	if !ev.store() {
		return nil
	}
	client := ev.q.Client
	st := ev.clientState(ctx)
	if st.err != nil {
		ev.storeFailed("reputation", st.err)
		return nil
	}
	addr, network := st.rep()
	// A network needs more refusals than one address before it counts
	// against its neighbours.
	for _, r := range []struct {
		what  string
		s     store.Standing
		limit int64
	}{{"client", addr, 3}, {"network " + store.Network(client).String(), network, 10}} {
		if r.s.Refused >= r.limit && r.s.Refused > r.s.Passed {
			ev.note("reputation", ev.p.cfg.Weights.BadReputation, fmt.Sprintf("%s: %d refused, %d passed before", r.what, r.s.Refused, r.s.Passed))
			break
		}
	}
	return nil
}

// clientState is what the store says of the client, in one round trip:
// its reputation, its network's greylisting passes and, when the
// findings so far already make the client suspicious and no reputation
// could make it refused, its greylisting attempt (which the greylist
// check would otherwise make in a second round trip), made by the store
// only if the network is not allowlisted by its passes.
type clientState struct {
	done    bool
	err     error
	rep     func() (addr, network store.Standing)
	passes  func() int64
	attempt func() (store.GreylistEntry, bool) // nil: not asked; false: allowlisted, not made
}

func (ev *evaluation) clientState(ctx context.Context) *clientState {
	st := &ev.state
	if st.done {
		return st
	}
	p := ev.p
	var b store.Batch
	st.rep = p.rep.ReadOf(&b, ev.q.Client)
	st.passes = p.grey.ReadPasses(&b, store.Network(ev.q.Client))
	g, score := p.cfg.Greylist, ev.d.Score
	if g.Enabled && score >= p.cfg.SuspiciousScore && score+max(p.cfg.Weights.BadReputation, 0) < p.cfg.RejectScore &&
		!p.spfAllowlisted(ev.q.SenderDomain()) {
		st.attempt = p.grey.AttemptIn(&b, ev.triplet(), ev.now, p.greylistPolicy(), g.AllowlistAfter)
	}
	st.err = b.Run(ctx, p.st)
	st.done = true
	return st
}

// reputation records an outcome for the client and its network; best
// effort: a store failure costs one count, and mail goes on.
func (p *Pipeline) reputation(ctx context.Context, client netip.Addr, passed bool) {
	if p.st == nil {
		return
	}
	p.rep.Record(ctx, client, passed) //nolint:errcheck // best effort
}
