package policyd

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// reputationCheck scores a client, or its network, refused more often
// than passed before (store.Reputation, shared by every MX).
type reputationCheck struct{}

func (reputationCheck) start(ctx context.Context, ev *evaluation) {
	if ev.store() {
		ev.state.start(ctx, ev)
	}
}

func (reputationCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	if !ev.store() {
		return nil
	}
	client := ev.q.Client
	st := ev.state.wait(ctx, ev)
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

// reputation records an outcome for the client and its network; best
// effort: a store failure costs one count, and mail goes on.
func (p *Pipeline) reputation(ctx context.Context, client netip.Addr, passed bool) {
	if p.st == nil {
		return
	}
	p.rep.Record(ctx, client, passed) //nolint:errcheck // best effort
}

// stateFuture is what the store knows of the client (its reputation, its
// network's greylisting passes), read in one round trip while the DNS
// lookups run.
type stateFuture struct {
	once sync.Once
	done chan struct{}
	err  error
	rep  func() (addr, network store.Standing)
	// passes is the network's greylisting passes.
	passes func() int64
}

func (f *stateFuture) start(ctx context.Context, ev *evaluation) {
	f.once.Do(func() {
		f.done = make(chan struct{})
		var rd store.Reads
		f.rep = ev.p.rep.ReadOf(&rd, ev.q.Client)
		f.passes = ev.p.grey.ReadPasses(&rd, store.Network(ev.q.Client))
		go func() {
			defer close(f.done)
			f.err = rd.Run(ctx, ev.p.st)
		}()
	})
}

// wait returns the reads, starting them if no check did.
func (f *stateFuture) wait(ctx context.Context, ev *evaluation) *stateFuture {
	f.start(ctx, ev)
	<-f.done
	return f
}
