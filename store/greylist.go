package store

import (
	"context"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Greylists owns the greylisting state:
//
//	grey:NET:SENDER:RECIPIENT   one triplet's attempts (Store.Greylist)
//	grey-ok:NET                 how many of a network's triplets passed
//
// NET is the client's Network. The sender is normalised by the caller
// (policyd.NormalizeSender); the recipient is lower-cased here.
type Greylists struct{ st Store }

// NewGreylists is the greylisting state in st.
func NewGreylists(st Store) Greylists { return Greylists{st: st} }

// allowlisted is the pass count that "greylist allow" writes: above any
// allowlist_after.
const allowlisted = 1_000_000

// Triplet names one greylist entry.
type Triplet struct {
	Network   netip.Prefix
	Sender    string // normalised
	Recipient string
}

// String is the entry as ops commands show and take it: NET:SENDER:RCPT.
func (t Triplet) String() string {
	return t.Network.String() + ":" + t.Sender + ":" + strings.ToLower(t.Recipient)
}

// Attempt records a delivery attempt of the triplet at now.
func (g Greylists) Attempt(ctx context.Context, t Triplet, now time.Time, p GreylistPolicy) (GreylistEntry, error) {
	return g.st.Greylist(ctx, "grey:"+t.String(), now, p)
}

// Passes is how many triplets of network n passed greylisting.
func (g Greylists) Passes(ctx context.Context, n netip.Prefix) (int64, error) {
	v, _, err := g.st.Get(ctx, "grey-ok:"+n.String())
	return parseCount(v), err
}

// parseCount reads a count written by Incr or Set (0 when missing or
// not a number).
func parseCount(v []byte) int64 {
	c, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	return c
}

// AddPass counts one more passed triplet of network n, kept keep.
func (g Greylists) AddPass(ctx context.Context, n netip.Prefix, keep time.Duration) error {
	_, err := g.st.Incr(ctx, "grey-ok:"+n.String(), 1, keep)
	return err
}

// Allow stops greylisting network n (for keep).
func (g Greylists) Allow(ctx context.Context, n netip.Prefix, keep time.Duration) error {
	return g.st.Set(ctx, "grey-ok:"+n.Masked().String(), []byte(strconv.Itoa(allowlisted)), keep)
}

// Entries lists at most limit triplets starting with prefix (a network,
// say), sorted.
func (g Greylists) Entries(ctx context.Context, prefix string, limit int) ([]string, error) {
	keys, err := g.st.Scan(ctx, "grey:"+prefix, limit)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, strings.TrimPrefix(k, "grey:"))
	}
	sort.Strings(out)
	return out, nil
}

// NetworkPasses is one network's count of passed triplets.
type NetworkPasses struct {
	Network string
	Passes  int64
}

// Networks lists at most limit networks starting with prefix that have
// passed triplets, sorted.
func (g Greylists) Networks(ctx context.Context, prefix string, limit int) ([]NetworkPasses, error) {
	keys, err := g.st.Scan(ctx, "grey-ok:"+prefix, limit)
	if err != nil {
		return nil, err
	}
	sort.Strings(keys)
	out := make([]NetworkPasses, 0, len(keys))
	for _, k := range keys {
		v, ok, err := g.st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue // collected since the scan
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		out = append(out, NetworkPasses{Network: strings.TrimPrefix(k, "grey-ok:"), Passes: n})
	}
	return out, nil
}

// Remove deletes an entry as Entries or Networks name it: a triplet, or
// a network's pass count.
func (g Greylists) Remove(ctx context.Context, entry string) error {
	for _, k := range []string{"grey:" + entry, "grey-ok:" + entry} {
		if err := g.st.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
