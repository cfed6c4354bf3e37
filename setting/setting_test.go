package setting

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestProblems(t *testing.T) {
	p := New()
	s := p.Section("policyd")
	s.Add("listen", "bad %d", 1)
	s.Section("dns_lists[2]").Add("zone", "x")
	s.Section("submission").Section("classes.default").Add("", "negative")
	s.Positive("request_timeout", 0)
	s.Positive("idle_timeout", time.Second)
	s.OneOf("on_store_error", "maybe", "dunno", "tempfail")
	s.OneOf("on_store_error", "dunno", "dunno", "tempfail")
	s.Domains("local_domains", []string{"example.org", "localhost", "bücher.example", "a b.example"})
	want := []Problem{
		{"policyd.listen", "bad 1"},
		{"policyd.dns_lists[2].zone", "x"},
		{"policyd.submission.classes.default", "negative"},
		{"policyd.request_timeout", "must be positive, got 0s"},
		{"policyd.on_store_error", `"maybe" is not one of dunno, tempfail`},
		{"policyd.local_domains[1]", `"localhost" is not a domain name`},
		{"policyd.local_domains[3]", `"a b.example" is not a domain name`},
	}
	if fmt.Sprint(p.List()) != fmt.Sprint(want) {
		t.Fatalf("got  %v\nwant %v", p.List(), want)
	}
}

func TestNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7": "192.0.2.7/32", "192.0.2.7/24": "192.0.2.0/24", "::ffff:192.0.2.7": "192.0.2.7/32", "2001:db8::/32": "2001:db8::/32",
	} {
		var n Network
		if err := n.UnmarshalText([]byte(in)); err != nil || n.String() != want {
			t.Errorf("%s: %v %v, want %s", in, n, err, want)
		}
	}
	var n Network
	if err := n.UnmarshalText([]byte("mail.example")); err == nil || err.Error() != `"mail.example" is not an IP address or CIDR prefix` {
		t.Errorf("a name: %v", err)
	}
	nets := Networks("10.0.0.0/8", "192.0.2.1")
	if p, ok := Contains(nets, netip.MustParseAddr("::ffff:10.1.2.3")); !ok || p.String() != "10.0.0.0/8" {
		t.Errorf("Contains: %v %v", p, ok)
	}
	if _, ok := Contains(nets, netip.MustParseAddr("192.0.2.2")); ok {
		t.Error("Contains: a neighbour of a single address")
	}
}
