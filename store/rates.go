package store

import (
	"context"
	"net/netip"
	"strings"
	"time"
)

// Rates owns the sliding windows that rate limits count in:
//
//	rate:KIND:ADDR, rate:KIND:NET   per client address and Network (MX)
//	urate:KIND:USER                 per SASL user (submission)
//	uvol:USER                       a user's recent volume (bulk routing)
type Rates struct{ st Store }

// NewRates is the rate state in st.
func NewRates(st Store) Rates { return Rates{st: st} }

// Rate names one sliding window.
type Rate struct{ key string }

// ClientRate counts events of kind ("connections", "messages",
// "recipients") from one client address.
func ClientRate(kind string, a netip.Addr) Rate {
	return Rate{"rate:" + kind + ":" + a.Unmap().String()}
}

// NetworkRate counts events of kind from a client's Network.
func NetworkRate(kind string, a netip.Addr) Rate {
	return Rate{"rate:" + kind + ":" + Network(a).String()}
}

// UserRate counts events of kind ("msg", "rcpt") of a SASL user.
func UserRate(kind, user string) Rate {
	return Rate{"urate:" + kind + ":" + strings.ToLower(user)}
}

// UserVolume counts a user's messages for bulk routing.
func UserVolume(user string) Rate { return Rate{"uvol:" + strings.ToLower(user)} }

// Add counts n events at now (n may be 0 to read, or negative to take
// back) and returns the count in the window win.
func (r Rates) Add(ctx context.Context, rate Rate, now time.Time, win time.Duration, n int64) (int64, error) {
	return r.st.Window(ctx, rate.key, now, win, n)
}

// Wait is how long from now until the window admits one more event
// under limit (see WindowWait).
func (r Rates) Wait(ctx context.Context, rate Rate, now time.Time, win time.Duration, limit int64) (time.Duration, error) {
	return WindowWait(ctx, r.st, rate.key, now, win, limit)
}

// Transactions remembers which Postfix transactions (a policy request's
// "instance") were already counted as a message ("inst:ID"), since
// Postfix asks once per recipient.
type Transactions struct{ st Store }

// NewTransactions is the transaction state in st.
func NewTransactions(st Store) Transactions { return Transactions{st: st} }

// transactionKeep outlives any SMTP transaction.
const transactionKeep = 10 * time.Minute

// First says whether this is the first time instance is seen.
func (t Transactions) First(ctx context.Context, instance string) (bool, error) {
	n, err := t.st.Incr(ctx, "inst:"+instance, 1, transactionKeep)
	return n == 1, err
}

// Forget takes back First: the next request of instance is first again.
func (t Transactions) Forget(ctx context.Context, instance string) error {
	return t.st.Delete(ctx, "inst:"+instance)
}
