package mailauth

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/deadline"
)

// How the deadline and the DNS budget of one message are shared. Every
// check runs at the same time, under its own share of both, so that no
// check can spend what another needs: the checks whose DNS a sender
// chooses (SPF of his MAIL FROM, the names his address's PTR record
// lists, his DKIM keys, the list domains he writes) end at their share,
// and the DMARC policy discovery of each Author Domain, the lookup that
// decides, has the whole deadline and a budget of its own.
const (
	spfTimeShare   = 0.40
	iprevTimeShare = 0.25
	dkimTimeShare  = 0.50
	listTimeShare  = 0.15

	spfBudgetShare    = 0.40
	iprevBudgetShare  = 0.10
	dkimBudgetShare   = 0.10
	authorBudgetShare = 0.30 // each Author Domain
	listBudgetShare   = 0.10
)

// shareOf returns frac of n, at least least.
func shareOf(n int, frac float64, least int) int {
	return max(int(float64(n)*frac), least)
}

// checkCtx returns a context that ends at frac of the message deadline.
func (e *Engine) checkCtx(ctx context.Context, start time.Time, frac float64) (context.Context, context.CancelFunc) {
	return deadline.With(ctx, start.Add(time.Duration(float64(e.cfg.Limits.Deadline)*frac)))
}

// newBudget gives a check frac of the DNS budget, at least least lookups.
func (e *Engine) newBudget(name string, frac float64, least int) *budget {
	n := shareOf(e.cfg.Limits.DNSQueries, frac, least)
	b := &budget{Resolver: e.res, check: name, max: n}
	b.left.Store(int64(n))
	return b
}

// budget caps the DNS lookups of one message. Past the cap, lookups fail
// as temporary errors: never a permanent verdict from an attacker's
// expensive message.
type budget struct {
	Resolver
	check string // whose budget
	max   int
	left  atomic.Int64
}

func (b *budget) take(name string) error {
	if b.left.Add(-1) < 0 {
		return &net.DNSError{Err: fmt.Sprintf("%s budget of %d DNS lookups for this message exhausted", b.check, b.max), Name: name, IsTemporary: true}
	}
	return nil
}

// used returns the lookups made (or refused past the budget).
func (b *budget) used() int { return b.max - int(max(b.left.Load(), 0)) }

func (b *budget) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := b.take(name); err != nil {
		return nil, err
	}
	return b.Resolver.LookupTXT(ctx, name)
}

func (b *budget) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if err := b.take(name); err != nil {
		return nil, err
	}
	return b.Resolver.LookupMX(ctx, name)
}

func (b *budget) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if err := b.take(host); err != nil {
		return nil, err
	}
	return b.Resolver.LookupIPAddr(ctx, host)
}

func (b *budget) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	if err := b.take(addr); err != nil {
		return nil, err
	}
	return b.Resolver.LookupAddr(ctx, addr)
}

func (b *budget) Exists(ctx context.Context, name string) (bool, error) {
	if err := b.take(name); err != nil {
		return false, err
	}
	return b.Resolver.Exists(ctx, name)
}
