package storetest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
)

// runState tests each kind of state once against the backend: the types
// the daemons and the ops commands share. Addresses and names are new
// in every run, since a backend may be shared.
func runState(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	u := time.Now().UnixNano()
	// addrIn is an address in the network-th of this run's networks.
	addrIn := func(network, last int) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(10 + network), byte(u % 251), byte(u / 251 % 251), byte(last)})
	}
	addr := func(last int) netip.Addr { return addrIn(0, last) }
	net6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:%x:%x::1", u%0xffff, u/0xffff%0xffff))

	t.Run("network rule", func(t *testing.T) {
		for in, want := range map[string]string{
			"192.0.2.77": "192.0.2.0/24", "::ffff:192.0.2.77": "192.0.2.0/24", "2001:db8:1:2:3::4": "2001:db8:1:2::/64",
		} {
			if got := store.Network(netip.MustParseAddr(in)).String(); got != want {
				t.Errorf("Network(%s) = %s, want %s", in, got, want)
			}
		}
		if p, ok := store.ParseNetwork("192.0.2.77"); !ok || p.String() != "192.0.2.0/24" {
			t.Errorf("ParseNetwork(an address) = %v %v", p, ok)
		}
		if p, ok := store.ParseNetwork("192.0.2.77/16"); !ok || p.String() != "192.0.0.0/16" {
			t.Errorf("ParseNetwork(a prefix) = %v %v", p, ok)
		}
		if _, ok := store.ParseNetwork("mail.example"); ok {
			t.Error("ParseNetwork took a name")
		}
	})

	t.Run("greylists", func(t *testing.T) {
		g := store.NewGreylists(open(t))
		p := store.GreylistPolicy{Delay: time.Minute, Window: time.Hour, Keep: time.Hour}
		tr := store.Triplet{Network: store.Network(addr(7)), Sender: "a@x.example", Recipient: "Bob@Example.test"}
		if e, err := g.Attempt(ctx, tr, base, p); err != nil || e.Passed {
			t.Fatalf("first attempt: %+v %v", e, err)
		}
		if e, _ := g.Attempt(ctx, tr, base.Add(2*time.Minute), p); !e.Passed || e.Count != 1 {
			t.Fatalf("retry after the delay: %+v", e)
		}
		net := store.Network(addr(7)).String()
		entries, err := g.Entries(ctx, net, 0)
		if err != nil || strings.Join(entries, " ") != net+":a@x.example:bob@example.test" {
			t.Fatalf("entries %q %v", entries, err)
		}
		if n, err := g.Passes(ctx, tr.Network); n != 0 || err != nil {
			t.Fatalf("passes before any: %d %v", n, err)
		}
		for range 2 {
			if err := g.AddPass(ctx, tr.Network, time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := g.Passes(ctx, tr.Network); n != 2 {
			t.Fatalf("passes: %d", n)
		}
		other := store.Network(net6)
		if err := g.Allow(ctx, other, time.Hour); err != nil {
			t.Fatal(err)
		}
		if n, _ := g.Passes(ctx, other); n < 1000 {
			t.Fatalf("an allowed network has %d passes", n)
		}
		nets, err := g.Networks(ctx, net, 0)
		if err != nil || len(nets) != 1 || nets[0] != (store.NetworkPasses{Network: net, Passes: 2}) {
			t.Fatalf("networks %+v %v", nets, err)
		}
		for _, e := range []string{entries[0], net} {
			if err := g.Remove(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		if entries, _ := g.Entries(ctx, net, 0); len(entries) != 0 {
			t.Fatalf("removed entry still listed: %q", entries)
		}
		if n, _ := g.Passes(ctx, tr.Network); n != 0 {
			t.Fatalf("removed network still has %d passes", n)
		}
	})

	t.Run("reputation", func(t *testing.T) {
		r := store.NewReputation(open(t))
		a, neighbour := addr(20), addr(21)
		for _, passed := range []bool{true, false, false} {
			if err := r.Record(ctx, a, passed); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Record(ctx, neighbour, false); err != nil {
			t.Fatal(err)
		}
		ad, nw, err := r.Of(ctx, a)
		if err != nil || ad != (store.Standing{Passed: 1, Refused: 2}) || nw != (store.Standing{Passed: 1, Refused: 3}) {
			t.Fatalf("address %+v, network %+v, %v", ad, nw, err)
		}
		// An IPv4-mapped address is the same client.
		if m, _, _ := r.Of(ctx, netip.AddrFrom16(a.As16())); m != ad {
			t.Fatalf("mapped address: %+v", m)
		}
	})

	t.Run("reputation from two writers loses no update", func(t *testing.T) {
		r := store.NewReputation(open(t))
		a := addrIn(1, 30)
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 150 {
					if err := r.Record(ctx, a, w == 0); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if ad, nw, err := r.Of(ctx, a); err != nil || ad != (store.Standing{Passed: 150, Refused: 150}) || nw != ad {
			t.Fatalf("after 2×150 updates: address %+v, network %+v, %v", ad, nw, err)
		}
	})

	t.Run("rates", func(t *testing.T) {
		r := store.NewRates(open(t))
		win := 10 * time.Second
		for i := range 3 {
			if _, err := r.Add(ctx, store.ClientRate("messages", addr(40+i)), base, win, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Add(ctx, store.NetworkRate("messages", addr(40+i)), base, win, 1); err != nil {
				t.Fatal(err)
			}
		}
		if n, _ := r.Add(ctx, store.ClientRate("messages", addr(40)), base, win, 0); n != 1 {
			t.Fatalf("one address: %d", n)
		}
		if n, _ := r.Add(ctx, store.NetworkRate("messages", addr(99)), base, win, 0); n != 3 {
			t.Fatalf("the network: %d", n)
		}
		if n, _ := r.Add(ctx, store.ClientRate("recipients", addr(40)), base, win, 0); n != 0 {
			t.Fatalf("another kind: %d", n)
		}
		user := fmt.Sprintf("User%d@Example.test", u)
		for range 4 {
			r.Add(ctx, store.UserRate("msg", user), base, win, 1) //nolint:errcheck
		}
		if n, _ := r.Add(ctx, store.UserRate("msg", strings.ToLower(user)), base, win, 0); n != 4 {
			t.Fatalf("user rate (case-insensitive): %d", n)
		}
		if n, _ := r.Add(ctx, store.UserVolume(user), base, win, 0); n != 0 {
			t.Fatalf("volume is its own window: %d", n)
		}
		// Four in the bucket starting at base, limit 3: the count falls
		// to two 3.75 s into the next bucket, 13.75 s from base; whole
		// seconds plus the rounding second (see store.WindowWait).
		if w, err := r.Wait(ctx, store.UserRate("msg", user), base, win, 3); err != nil || w != 15*time.Second {
			t.Fatalf("wait %v %v", w, err)
		}
	})

	t.Run("transactions", func(t *testing.T) {
		tx := store.NewTransactions(open(t))
		id := fmt.Sprintf("t%d", u)
		for i, want := range []bool{true, false, false} {
			if first, err := tx.First(ctx, id); err != nil || first != want {
				t.Fatalf("request %d: first=%v %v", i, first, err)
			}
		}
		if err := tx.Forget(ctx, id); err != nil {
			t.Fatal(err)
		}
		if first, _ := tx.First(ctx, id); !first {
			t.Fatal("not first after Forget")
		}
	})

	t.Run("pass history", func(t *testing.T) {
		h := store.NewPassHistory(open(t), time.Hour)
		dom := fmt.Sprintf("D%d.example", u)
		a := addr(50)
		if ok, err := h.Passed(ctx, dom, net.IP(a.AsSlice())); ok || err != nil {
			t.Fatalf("before any pass: %v %v", ok, err)
		}
		if err := h.Record(ctx, dom, net.IP(a.AsSlice())); err != nil {
			t.Fatal(err)
		}
		if ok, _ := h.Passed(ctx, strings.ToLower(dom), net.IP(addr(51).AsSlice())); !ok {
			t.Fatal("the network of a pass has no history")
		}
		if ok, _ := h.Passed(ctx, dom, net.IP(net6.AsSlice())); ok {
			t.Fatal("another network has history")
		}
		if ok, err := h.Passed(ctx, dom, nil); ok || err != nil {
			t.Fatalf("no client: %v %v", ok, err)
		}
	})

	t.Run("report rows from two writers", func(t *testing.T) {
		rr := store.NewReportRows(open(t))
		dom := fmt.Sprintf("r%d.example", u)
		hour := base.Add(3*time.Hour + 17*time.Minute)
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					if err := rr.Add(ctx, strings.ToUpper(dom), hour, "k1", []byte(`{"row":1}`), 1); err != nil {
						t.Error(err)
						return
					}
				}
				if w == 0 {
					rr.Add(ctx, dom, hour.Add(time.Hour), "k2", []byte(`{"row":2}`), 5) //nolint:errcheck
				}
			}()
		}
		wg.Wait()
		rows, err := rr.Rows(ctx, dom, hour.Truncate(time.Hour), hour.Add(2*time.Hour))
		if err != nil || len(rows) != 2 {
			t.Fatalf("rows %+v %v", rows, err)
		}
		if rows[0].Key != "k1" || rows[0].Count != 200 || string(rows[0].Def) != `{"row":1}` || !rows[0].Hour.Equal(hour.Truncate(time.Hour)) {
			t.Fatalf("first row %+v", rows[0])
		}
		if rows[1].Key != "k2" || rows[1].Count != 5 {
			t.Fatalf("second row %+v", rows[1])
		}
		// The hour range is [from, to).
		if rows, _ := rr.Rows(ctx, dom, hour.Add(time.Hour), hour.Add(2*time.Hour)); len(rows) != 1 || rows[0].Key != "k2" {
			t.Fatalf("later hour only: %+v", rows)
		}
		doms, err := rr.Domains(ctx)
		if err != nil || !slices.Contains(doms, dom) {
			t.Fatalf("domains %v %v", doms, err)
		}
		if err := rr.Add(ctx, "a:b", hour, "k", nil, 1); err == nil {
			t.Fatal("a domain with a colon was taken")
		}
	})
}
