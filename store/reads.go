package store

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
)

// Reads collects reads of several kinds of state so that the store
// answers them together (Store.GetMany: one Redis round trip, one
// embedded read transaction): the policy service asks for everything it
// will read about a client at once, while its DNS lookups run. Each
// kind's owner adds its keys through its own method and decodes what
// comes back, so keys stay with their owners.
type Reads struct {
	keys []string
	vals [][]byte
	err  error
	done bool
}

func (r *Reads) add(key string) int {
	r.keys = append(r.keys, key)
	return len(r.keys) - 1
}

func (r *Reads) value(i int) []byte {
	if !r.done || r.err != nil || i >= len(r.vals) {
		return nil
	}
	return r.vals[i]
}

// Run makes the reads; after it, each kind's read function returns its
// value (the zero value when Run failed: Run's error says so).
func (r *Reads) Run(ctx context.Context, st Store) error {
	if len(r.keys) > 0 {
		r.vals, r.err = st.GetMany(ctx, r.keys)
	}
	r.done = true
	return r.err
}

// ReadOf adds the reads of client's and its network's standing to rd;
// the function returns them after rd.Run.
func (r Reputation) ReadOf(rd *Reads, client netip.Addr) func() (addr, network Standing) {
	client = client.Unmap()
	a, n := rd.add("rep:"+client.String()), rd.add("rep:"+Network(client).String())
	return func() (Standing, Standing) {
		return standing(parseCounters(rd.value(a))), standing(parseCounters(rd.value(n)))
	}
}

// ReadPasses adds the read of network n's greylisting passes to rd.
func (g Greylists) ReadPasses(rd *Reads, n netip.Prefix) func() int64 {
	i := rd.add("grey-ok:" + n.String())
	return func() int64 {
		c, _ := strconv.ParseInt(strings.TrimSpace(string(rd.value(i))), 10, 64)
		return c
	}
}
