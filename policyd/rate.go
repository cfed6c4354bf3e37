package policyd

import (
	"context"
	"fmt"
	"time"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// rateCheck caps the connections (at CONNECT), or the recipients and
// messages (at RCPT; a message is the first RCPT of a transaction), per
// client address and per network in policyd.rates.window.
type rateCheck struct{ connect bool }

func (c rateCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	p := ev.p
	if !ev.store() {
		return nil
	}
	rates := p.cfg.Rates
	if c.connect {
		r, err := ev.rate(ctx, "connections", rates.ConnectionsPerIP, rates.ConnectionsPerSubnet)
		if err != nil {
			ev.storeFailed("rate", err)
		}
		return r
	}
	r, err := ev.rate(ctx, "recipients", rates.RecipientsPerIP, rates.RecipientsPerSubnet)
	if err == nil && r == nil && (rates.MessagesPerIP > 0 || rates.MessagesPerSubnet > 0) {
		var first bool
		if first, err = p.txns.First(ctx, ev.q.Instance); err == nil && first {
			r, err = ev.rate(ctx, "messages", rates.MessagesPerIP, rates.MessagesPerSubnet)
		}
	}
	if err != nil {
		ev.storeFailed("rate", err)
	}
	return r
}

// rate counts one event of kind for the client and its network and
// returns the reply when a cap is exceeded.
func (ev *evaluation) rate(ctx context.Context, kind string, perIP, perNet int64) (*smtpreply.Reply, error) {
	p, client := ev.p, ev.q.Client
	for _, r := range []struct {
		rate  store.Rate
		limit int64
		what  string
	}{{store.ClientRate(kind, client), perIP, "[" + client.String() + "]"}, {store.NetworkRate(kind, client), perNet, store.Network(client).String()}} {
		if r.limit <= 0 {
			continue
		}
		n, err := p.rates.Add(ctx, r.rate, ev.now, p.cfg.Rates.Window, 1)
		if err != nil {
			return nil, err
		}
		if n > r.limit {
			secs := p.retryIn(ctx, r.rate, ev.now, p.cfg.Rates.Window, r.limit)
			ev.note("rate", 0, fmt.Sprintf("%d %s from %s in %v, limit %d", n, kind, r.what, p.cfg.Rates.Window, r.limit))
			return reply(450, "4.7.1", fmt.Sprintf("Too many %s from %s; please retry in %d seconds", kind, r.what, secs), "rate"), nil
		}
	}
	return nil, nil
}

// retryIn says in how many seconds the sliding window admits one more
// event (the whole window if the store cannot tell).
func (p *Pipeline) retryIn(ctx context.Context, rate store.Rate, now time.Time, win time.Duration, limit int64) int {
	wait, err := p.rates.Wait(ctx, rate, now, win, limit)
	if err != nil || wait <= 0 || wait > 2*win {
		wait = win
	}
	return int(wait.Seconds())
}
