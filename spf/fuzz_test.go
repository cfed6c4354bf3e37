package spf

import (
	"strings"
	"testing"
)

func FuzzCheckSPFRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all", "v=spf1 a:%{d}/24//64 mx ptr:%{ir}.%{v}.x.example ip4:1.2.3.4/32 ip6:::1/128 include:x.example exists:%{i}.x.example redirect=y.example exp=z.example -all",
		"v=spf1 a:foo:bar/baz.example.com", "v=spf1 %{", "v=spf1 ip4:1.2.3.4//32", "v=spf1 a:%%%_%-.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		err := CheckRecord(rec)
		if err == nil {
			// A valid record is printable ASCII and starts with the version.
			if !strings.HasPrefix(strings.ToLower(rec), "v=spf1") {
				t.Fatalf("accepted %q without version", rec)
			}
			for i := 0; i < len(rec); i++ {
				if rec[i] < 0x20 || rec[i] > 0x7e {
					t.Fatalf("accepted byte %#x in %q", rec[i], rec)
				}
			}
			// Every macro in a valid record expands without error.
			env := &macroEnv{sender: "a@b.example", domain: "b.example"}
			for _, term := range strings.Fields(rec[6:]) {
				if _, err := env.expandMacros(term, false); err != nil && strings.Contains(term, "%") {
					// Terms hold ":" and "/" around the domain-spec; only
					// check the macro syntax, which is the whole term's.
					t.Fatalf("valid record %q: term %q does not expand: %v", rec, term, err)
				}
			}
		}
	})
}
