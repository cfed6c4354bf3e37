package spf

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/wehr/wehr/internal/spfsuite"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// The RFC 7208 suite has 203 tests; the SPF library cannot pass five of
// them whatever we do around it (the four colon-domain cases read
// "a:foo:bar/baz.example.com" as a CIDR mask, and p-macro-multiple needs
// the p macro inside a mechanism), so 198 is the ceiling.
const spfSuiteSize = 203

// spfLibraryLimits are the misses the library makes unavoidable.
var spfLibraryLimits = map[string]bool{
	"a-colon-domain": true, "a-colon-domain-ip4mapped": true,
	"mx-colon-domain": true, "mx-colon-domain-ip4mapped": true,
	"p-macro-multiple": true,
}

func TestRFC7208Suite(t *testing.T) {
	scenarios, err := spfsuite.Load(spfsuite.RFC7208)
	if err != nil {
		t.Fatal(err)
	}
	var outs []spfsuite.Outcome
	for _, sc := range scenarios {
		srv := dnstest.New(t, "")
		if err := sc.Serve(srv); err != nil {
			t.Fatal(err)
		}
		res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Attempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		c := New(res, Config{Timeout: 5 * time.Second, DefaultExplanation: "DEFAULT", Receiver: "localdomain.org"})
		for _, tc := range sc.Tests {
			r := c.CheckMailFrom(context.Background(), net.ParseIP(tc.Host), tc.Helo, tc.MailFrom)
			outs = append(outs, spfsuite.Outcome{Test: tc, Result: string(r.Result), Explanation: r.Explanation, Error: r.Error})
		}
	}
	matched, expChecked, expMatched, misses := spfsuite.Report(outs)
	t.Logf("%d/%d results match; explanations %d/%d", matched, len(outs), expMatched, expChecked)
	for _, m := range misses {
		t.Logf("miss: %s", m)
	}
	if len(outs) != spfSuiteSize {
		t.Errorf("ran %d tests, the suite has %d", len(outs), spfSuiteSize)
	}
	for _, o := range outs {
		if !o.Match() && !spfLibraryLimits[o.Test.Name] {
			t.Errorf("regression: %s gives %s, want %v (%s)", o.Test.Name, o.Result, o.Test.Results, o.Error)
		}
	}
	// v-macro-ip6 is the one explanation miss: the suite wants the
	// nibbles of %{ir} in the case the test wrote the address in
	// (CAFE:BABE::1), which pyspf keeps; DNS names ignore case, RFC 7208
	// 7.3 does not say, and we write lower case like the reverse zone.
	if expChecked-expMatched > 1 {
		t.Errorf("%d explanation misses, want at most 1", expChecked-expMatched)
	}
	// Every other test matches (above); if the library comes to pass
	// one of its limits, the count shows it and the map must shrink.
	if want := spfSuiteSize - len(spfLibraryLimits); matched != want {
		t.Errorf("%d/%d results match, want exactly %d", matched, len(outs), want)
	}
}
