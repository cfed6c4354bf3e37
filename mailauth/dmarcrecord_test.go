package mailauth

import (
	"strings"
	"testing"
)

func TestParseDMARCRecord(t *testing.T) {
	tests := []struct {
		in     string
		notRec bool
		check  func(*DMARCRecord) bool
		usable bool
		policy string
	}{
		{in: "v=DMARC1; p=reject", usable: true, policy: "reject"},
		{in: "v=DMARC1;p=quarantine;sp=none;np=reject;adkim=s;aspf=s;t=y;psd=n", usable: true, policy: "quarantine",
			check: func(r *DMARCRecord) bool {
				return r.Subdomain == "none" && r.NonExistent == "reject" && r.ADKIM == 's' && r.ASPF == 's' && r.Testing && r.PSD == 'n'
			}},
		{in: "v = DMARC1 ; P = REJECT ; SP = Quarantine", usable: true, policy: "reject",
			check: func(r *DMARCRecord) bool { return r.Subdomain == "quarantine" }},
		{in: "V=DMARC1; p=none", usable: true, policy: "none"},
		{in: "v=dmarc1; p=reject", notRec: true},
		{in: "p=reject; v=DMARC1", notRec: true},
		{in: "v=DMARC2; p=reject", notRec: true},
		{in: "v=spf1 -all", notRec: true},
		{in: "", notRec: true},
		// Unknown tags and bad optional values fall back to defaults.
		{in: "v=DMARC1; p=reject; foo=bar; adkim=x; pct=101; rf=iodef; ri=abc", usable: true, policy: "reject",
			check: func(r *DMARCRecord) bool { return r.ADKIM == 'r' && !r.PctZero }},
		{in: "v=DMARC1; p=quarantine; pct=0", usable: true, policy: "quarantine",
			check: func(r *DMARCRecord) bool { return r.PctZero }},
		// No p: p=none (RFC 9989 4.7).
		{in: "v=DMARC1; rua=mailto:d@example.org", usable: true, policy: "none"},
		{in: "v=DMARC1", usable: true, policy: "none"},
		// Invalid p, sp or np: p=none with a valid rua, else no policy.
		{in: "v=DMARC1; p=bogus; rua=mailto:d@example.org", usable: true, policy: "none"},
		{in: "v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.org", usable: true, policy: "none",
			check: func(r *DMARCRecord) bool { return r.BadPolicy }},
		{in: "v=DMARC1; p=reject; np=bogus; rua=mailto:d@example.org", usable: true, policy: "none"},
		{in: "v=DMARC1; p=bogus", usable: false},
		{in: "v=DMARC1; p=reject; sp=nope", usable: false},
		{in: "v=DMARC1; p=reject; np=x; rua=not a uri", usable: false},
		{in: "v=DMARC1; p=none; rua=mailto:a@example.org!10m, https://r.example/x ,bogus", usable: true, policy: "none",
			check: func(r *DMARCRecord) bool {
				return strings.Join(r.RUA, " ") == "mailto:a@example.org https://r.example/x"
			}},
	}
	for _, tc := range tests {
		r, err := ParseDMARCRecord(tc.in)
		if tc.notRec {
			if err == nil {
				t.Errorf("%q parsed as a DMARC record", tc.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if tc.check != nil && !tc.check(r) {
			t.Errorf("%q: parsed %+v", tc.in, r)
		}
		u, ok := r.Usable()
		if ok != tc.usable {
			t.Errorf("%q: usable %v, want %v", tc.in, ok, tc.usable)
			continue
		}
		if ok && u.Policy != tc.policy {
			t.Errorf("%q: policy %q, want %q", tc.in, u.Policy, tc.policy)
		}
	}
}

func FuzzParseDMARCRecord(f *testing.F) {
	for _, s := range []string{"v=DMARC1; p=reject", "v=DMARC1;p=none;rua=mailto:a@b.c!10m;np=reject;psd=y;t=y", "v=DMARC1; p=x; rua=x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseDMARCRecord(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(strings.TrimLeft(s, " \t"), "v") && !strings.HasPrefix(strings.TrimLeft(s, " \t"), "V") {
			t.Fatalf("%q accepted without v= first", s)
		}
		u, ok := r.Usable()
		if !ok {
			return
		}
		switch u.Policy {
		case PolicyNone, PolicyQuarantine, PolicyReject:
		default:
			t.Fatalf("%q: usable record with policy %q", s, u.Policy)
		}
		if u.ADKIM != 'r' && u.ADKIM != 's' || u.PSD != 'y' && u.PSD != 'n' && u.PSD != 'u' {
			t.Fatalf("%q: bad defaults %+v", s, u)
		}
	})
}
