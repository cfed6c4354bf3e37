package store

import (
	"context"
	"net/netip"
	"time"
)

// Reputation owns what the store knows of clients: how often a client
// address and its Network were refused and passed, as Counters
// ("rep:ADDR", "rep:NET": "PASSED REFUSED"), so that an update from any
// MX node is atomic on every backend.
type Reputation struct {
	st   Store
	keep time.Duration
}

// ReputationKeep is how long a reputation lives after its last change.
const ReputationKeep = 90 * 24 * time.Hour

// NewReputation is the reputation state in st.
func NewReputation(st Store) Reputation { return Reputation{st: st, keep: ReputationKeep} }

// Standing is one client's or network's record.
type Standing struct {
	Passed, Refused int64
}

func standing(c []int64) Standing {
	var s Standing
	if len(c) > 0 {
		s.Passed = c[0]
	}
	if len(c) > 1 {
		s.Refused = c[1]
	}
	return s
}

// Record counts one pass or refusal of client, for the address and for
// its Network.
func (r Reputation) Record(ctx context.Context, client netip.Addr, passed bool) error {
	add := []int64{0, 1}
	if passed {
		add = []int64{1, 0}
	}
	client = client.Unmap()
	for _, k := range []string{"rep:" + client.String(), "rep:" + Network(client).String()} {
		if _, err := r.st.Counters(ctx, k, add, r.keep); err != nil {
			return err
		}
	}
	return nil
}

// Of returns the standing of client and of its Network (one round trip).
func (r Reputation) Of(ctx context.Context, client netip.Addr) (addr, network Standing, err error) {
	var b Batch
	of := r.ReadOf(&b, client)
	if err := b.Run(ctx, r.st); err != nil {
		return Standing{}, Standing{}, err
	}
	addr, network = of()
	return addr, network, nil
}
