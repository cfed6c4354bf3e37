package arc

import (
	"strings"
	"testing"

	"github.com/wehr/wehr/setting"
)

func TestSealSettings(t *testing.T) {
	for _, tc := range []struct {
		cfg      Config
		rcpts    []string
		wants    bool
		problems string
	}{
		{Config{Seal: SealOff}, []string{"a@x.example"}, false, ""},
		{Config{Seal: SealAll, SealDomain: "example.net"}, []string{"<a@example.net>"}, true, ""},
		{Config{Seal: SealRelay, SealDomain: "example.net", LocalDomains: []string{"example.net"}}, []string{"<a@Example.NET>"}, false, ""},
		{Config{Seal: SealRelay, SealDomain: "example.net", LocalDomains: []string{"example.net"}}, []string{"a@example.net", "b@customer.example"}, true, ""},
		{Config{Seal: "sometimes", SealDomain: "example.net"}, nil, false, "arc.seal"},
		{Config{Seal: SealAll}, nil, true, "arc.seal_domain"},
		{Config{Seal: SealRelay, SealDomain: "example.net"}, nil, false, "arc.local_domains"},
	} {
		p := setting.New()
		tc.cfg.Check(p.Section("arc"))
		var got []string
		for _, pr := range p.List() {
			got = append(got, pr.Key)
		}
		if strings.Join(got, ",") != tc.problems {
			t.Errorf("%+v: problems %v, want %q", tc.cfg, got, tc.problems)
		}
		if tc.problems == "" && tc.cfg.Wants(tc.rcpts) != tc.wants {
			t.Errorf("%+v %v: wants %v", tc.cfg, tc.rcpts, !tc.wants)
		}
	}
}
