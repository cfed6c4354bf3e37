package store

import (
	"context"
	"net/netip"
	"time"
)

// Op is one operation of a Batch: a Get, or, with Greylist set, a
// Greylist attempt at Now. Store.Do fills in its result.
type Op struct {
	Key      string
	Greylist *GreylistPolicy
	Now      time.Time
	// Unless, if set, skips the Greylist attempt when the number stored
	// there is at least UnlessAtLeast (the same step, atomic with it:
	// a network's passes allowlisting it).
	Unless        string
	UnlessAtLeast int64

	Value   []byte        // a Get's value; nil when the key does not exist
	Entry   GreylistEntry // a Greylist attempt's entry
	Skipped bool          // the attempt was not made (Unless)
}

// Batch collects the operations of several kinds of state so that the
// store makes them together (Store.Do: one Redis round trip; the
// embedded store without a write transaction for the reads): the policy
// service asks for everything it reads about a client, and records a
// greylisting attempt it knows it will need, at once. Each kind's owner
// adds its operations through its own method and decodes what comes
// back, so keys stay with their owners.
type Batch struct {
	ops  []Op
	err  error
	done bool
}

func (b *Batch) add(op Op) int {
	if b.ops == nil {
		b.ops = make([]Op, 0, 4)
	}
	b.ops = append(b.ops, op)
	return len(b.ops) - 1
}

func (b *Batch) op(i int) *Op {
	if !b.done || b.err != nil || i >= len(b.ops) {
		return &Op{}
	}
	return &b.ops[i]
}

// Run makes the operations; after it, each kind's function returns its
// result (the zero value when Run failed: Run's error says so).
func (b *Batch) Run(ctx context.Context, st Store) error {
	if len(b.ops) > 0 {
		b.err = st.Do(ctx, b.ops)
	}
	b.done = true
	return b.err
}

// attempt makes one Greylist op through st's own Get and Greylist, for
// the backends that have no faster way: the Unless count is read first
// (counts only grow, so reading it first never skips an attempt that
// should be made).
func attempt(ctx context.Context, st Store, op *Op) error {
	if op.Unless != "" {
		v, _, err := st.Get(ctx, op.Unless)
		if err != nil {
			return err
		}
		if parseCount(v) >= op.UnlessAtLeast {
			op.Skipped = true
			return nil
		}
	}
	var err error
	op.Entry, err = st.Greylist(ctx, op.Key, op.Now, *op.Greylist)
	return err
}

// ReadOf adds the reads of client's and its network's standing to b;
// the function returns them after b.Run.
func (r Reputation) ReadOf(b *Batch, client netip.Addr) func() (addr, network Standing) {
	client = client.Unmap()
	a, n := b.add(Op{Key: "rep:" + client.String()}), b.add(Op{Key: "rep:" + Network(client).String()})
	return func() (Standing, Standing) {
		return standing(parseCounters(b.op(a).Value)), standing(parseCounters(b.op(n).Value))
	}
}

// ReadPasses adds the read of network n's greylisting passes to b.
func (g Greylists) ReadPasses(b *Batch, n netip.Prefix) func() int64 {
	i := b.add(Op{Key: "grey-ok:" + n.String()})
	return func() int64 { return parseCount(b.op(i).Value) }
}

// AttemptIn adds Attempt to b, unless the triplet's network passed
// greylisting allowlistAfter times (0: always): the function returns the
// entry after b.Run, or false when the network is allowlisted.
func (g Greylists) AttemptIn(b *Batch, t Triplet, now time.Time, p GreylistPolicy, allowlistAfter int64) func() (GreylistEntry, bool) {
	op := Op{Key: "grey:" + t.String(), Greylist: &p, Now: now}
	if allowlistAfter > 0 {
		op.Unless, op.UnlessAtLeast = "grey-ok:"+t.Network.String(), allowlistAfter
	}
	i := b.add(op)
	return func() (GreylistEntry, bool) { o := b.op(i); return o.Entry, !o.Skipped }
}
