package policyd

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// reputationCheck scores a client, or its network, refused more often
// than passed before (store.Reputation, shared by every MX).
type reputationCheck struct{}

func (reputationCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	if !ev.store() {
		return nil
	}
	client := ev.q.Client
	addr, network, err := ev.p.rep.Of(ctx, client)
	if err != nil {
		ev.storeFailed("reputation", err)
		return nil
	}
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

// reputation records an outcome for the client and its network; best
// effort: a store failure costs one count, and mail goes on.
func (p *Pipeline) reputation(ctx context.Context, client netip.Addr, passed bool) {
	if p.st == nil {
		return
	}
	p.rep.Record(ctx, client, passed) //nolint:errcheck // best effort
}
