package dnstest

import (
	"testing"

	"github.com/miekg/dns"
)

// TestValidating: with Validating on, an answer to a query with the DO
// bit carries the AD bit; without DO, or with Validating off, it does
// not (a client that did not ask must not be told).
func TestValidating(t *testing.T) {
	s := New(t, "a.example. 300 IN A 192.0.2.1\n")
	ask := func(do bool) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion("a.example.", dns.TypeA)
		if do {
			q.SetEdns0(1232, true)
		}
		r, err := dns.Exchange(q, s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if ask(true).AuthenticatedData {
		t.Error("AD set while not validating")
	}
	s.Validating(true)
	r := ask(true)
	if !r.AuthenticatedData || r.IsEdns0() == nil || !r.IsEdns0().Do() || len(r.Answer) != 1 {
		t.Errorf("validating, DO query: AD %v, OPT %v, answer %v", r.AuthenticatedData, r.IsEdns0(), r.Answer)
	}
	if ask(false).AuthenticatedData {
		t.Error("AD set for a query without DO")
	}
}
