package policyd

import (
	"context"
	"net"
	"sync"

	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/smtpreply"
)

// fcrdnsCheck scores a client without forward-confirmed reverse DNS
// (the engine's iprev, RFC 8601 3): mail servers have one.
type fcrdnsCheck struct{}

func (fcrdnsCheck) start(ctx context.Context, ev *evaluation) { ev.iprev.start(ctx, ev) }

func (fcrdnsCheck) run(_ context.Context, ev *evaluation) *smtpreply.Reply {
	switch rev := ev.iprev.wait(); rev.Result {
	case iprev.Fail, iprev.PermError:
		ev.note("fcrdns", ev.p.cfg.Weights.NoFCrDNS, "no forward-confirmed reverse DNS: "+rev.Error)
	case iprev.TempError:
		ev.note("fcrdns", 0, "reverse DNS lookup failed: "+rev.Error)
	}
	return nil
}

// iprevFuture is the client's iprev result, looked up once for the
// checks that read it, while the others run.
type iprevFuture struct {
	once sync.Once
	done chan struct{}
	rev  iprev.Outcome
}

func (f *iprevFuture) start(ctx context.Context, ev *evaluation) {
	f.once.Do(func() {
		f.done = make(chan struct{})
		go func() {
			defer close(f.done)
			f.rev = iprev.Check(ctx, ev.p.res, net.IP(ev.q.Client.AsSlice()))
		}()
	})
}

func (f *iprevFuture) wait() iprev.Outcome {
	<-f.done
	return f.rev
}
