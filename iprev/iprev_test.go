package iprev

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

func TestCheck(t *testing.T) {
	zone := `
10.2.0.192.in-addr.arpa.  300 IN PTR mail.good.example.
mail.good.example.        300 IN A   192.0.2.10
11.2.0.192.in-addr.arpa.  300 IN PTR mail.liar.example.
mail.liar.example.        300 IN A   192.0.2.99
13.2.0.192.in-addr.arpa.  300 IN PTR slow.example.
`
	// Eleven names, the right one last: past the cap of ten.
	for i := range 11 {
		zone += fmt.Sprintf("14.2.0.192.in-addr.arpa. 300 IN PTR n%02d.many.example.\n", i)
	}
	zone += "n10.many.example. 300 IN A 192.0.2.14\n"
	srv := dnstest.New(t, zone)
	srv.ServFail("slow.example")
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip     string
		result Result
		name   string
		err    string
	}{
		{"192.0.2.10", Pass, "mail.good.example", ""},
		{"192.0.2.11", Fail, "mail.liar.example", "resolves back"},
		{"192.0.2.12", PermError, "", "no PTR record"},
		{"192.0.2.13", TempError, "", ""},
		{"192.0.2.14", Fail, "", "resolves back"},
	}
	for _, tc := range tests {
		o := Check(context.Background(), res, net.ParseIP(tc.ip))
		if o.Result != tc.result || (tc.name != "" && o.Name != tc.name) || !strings.Contains(o.Error, tc.err) || o.IP != tc.ip {
			t.Errorf("%s: %+v, want %s %s %q", tc.ip, o, tc.result, tc.name, tc.err)
		}
	}
	if o := Check(context.Background(), res, nil); o.Result != None {
		t.Errorf("no address: %+v", o)
	}
}
