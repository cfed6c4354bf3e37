package mtasts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name, body string
		want       Policy
		err        string // part of the error; "" for none
	}{
		{"RFC 8461 3.2 example", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			Policy{Enforce, 604800 * time.Second, []string{"mail.example.com", "*.example.net", "backupmx.example.com"}}, ""},
		{"LF, no final newline, any order", "mode: testing\nmx: MX.Example.ORG.\nmax_age: 86400\nversion: STSv1",
			Policy{Testing, 86400 * time.Second, []string{"mx.example.org"}}, ""},
		{"none needs no mx", "version: STSv1\nmode: none\nmax_age: 0\n", Policy{None, 0, nil}, ""},
		{"unknown fields ignored", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 60\nfuture_field: whatever\n",
			Policy{Enforce, time.Minute, []string{"a.example"}}, ""},
		{"first of a repeated field counts", "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 60\nmax_age: 999\n",
			Policy{Testing, time.Minute, []string{"a.example"}}, ""},
		{"max_age lowered to a year", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
			Policy{Enforce, MaxMaxAge, []string{"a.example"}}, ""},
		{"spaces after values", "version: STSv1  \nmode:enforce\t\nmx:  a.example \nmax_age: 60 \n",
			Policy{Enforce, time.Minute, []string{"a.example"}}, ""},

		{"no version", "mode: enforce\nmx: a.example\nmax_age: 60\n", Policy{}, "no version"},
		{"other version", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 60\n", Policy{}, "not STSv1"},
		{"version is case-sensitive", "Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 60\n", Policy{}, "no version"},
		{"bad mode", "version: STSv1\nmode: report\nmx: a.example\nmax_age: 60\n", Policy{}, "mode \"report\""},
		{"no mode", "version: STSv1\nmx: a.example\nmax_age: 60\n", Policy{}, "no mode"},
		{"enforce without mx", "version: STSv1\nmode: enforce\nmax_age: 60\n", Policy{}, "no mx"},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: a.example\n", Policy{}, "no max_age"},
		{"negative max_age", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", Policy{}, "max_age"},
		{"11 digits", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", Policy{}, "max_age"},
		{"not key: value", "version: STSv1\nmode enforce\n", Policy{}, "not \"key: value\""},
		{"mx wildcard in the middle", "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 60\n", Policy{}, "mx"},
		{"mx a single label", "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 60\n", Policy{}, "mx"},
		{"an HTML error page", "<html><body>Not found</body></html>", Policy{}, "not \"key: value\""},
		{"too big", "version: STSv1\n" + strings.Repeat("x: y\n", MaxPolicySize/5+1), Policy{}, "bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.body))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrPolicy) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Mode != tc.want.Mode || p.MaxAge != tc.want.MaxAge || strings.Join(p.MX, ",") != strings.Join(tc.want.MX, ",") {
				t.Errorf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	p := Policy{Mode: Enforce, MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com":      true,
		"MAIL.example.com.":     true,
		"mx1.example.net":       true,
		"example.net":           false, // *. needs a label
		"a.b.example.net":       false, // exactly one label (RFC 8461 4.1)
		"mail.example.com.evil": false,
		"evilmail.example.com":  false,
		".example.net":          false,
		"":                      false,
	} {
		if got := p.Match(host); got != want {
			t.Errorf("Match(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestSelectRecord(t *testing.T) {
	tests := []struct {
		name string
		txts []string
		id   string
		err  string
	}{
		{"RFC 8461 3.1 example", []string{"v=STSv1; id=20160831085700Z;"}, "20160831085700Z", ""},
		{"others discarded", []string{"v=spf1 -all", "v=STSv1;id=abc", "google-site-verification=x"}, "abc", ""},
		{"extensions", []string{"v=STSv1; ext_1=foo; id=a1 ;x.y=z"}, "a1", ""},
		{"first id counts", []string{"v=STSv1; id=first; id=second"}, "first", ""},
		{"none", []string{"v=spf1 -all"}, "", "no TXT record starts"},
		{"two", []string{"v=STSv1; id=a", "v=STSv1; id=b"}, "", "2 records"},
		{"no id", []string{"v=STSv1; ext=1"}, "", "no id"},
		{"id too long", []string{"v=STSv1; id=" + strings.Repeat("a", 33)}, "", "1 to 32"},
		{"id not alphanumeric", []string{"v=STSv1; id=2016-08-31"}, "", "1 to 32"},
		{"version is case-sensitive", []string{"v=stsv1; id=a"}, "", "no TXT record starts"},
		{"garbage field", []string{"v=STSv1; id=a; what"}, "", "field"},
		{"empty value", []string{"v=STSv1; id="}, "", "field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := SelectRecord(tc.txts)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrNoRecord) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || r.ID != tc.id {
				t.Fatalf("got %+v %v, want id %q", r, err, tc.id)
			}
		})
	}
}

// FuzzParsePolicy: whatever a domain publishes, the parser returns a
// policy or an error, and a policy it returns is sound: a known mode, a
// bounded max_age, mx patterns that are host names.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"))
	f.Add([]byte("version: STSv1\nmode: none\nmax_age: 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			return
		}
		if p.Mode != Enforce && p.Mode != Testing && p.Mode != None || p.MaxAge < 0 || p.MaxAge > MaxMaxAge {
			t.Fatalf("unsound policy %+v", p)
		}
		for _, m := range p.MX {
			if !validPattern(m) || !p.Match(strings.Replace(m, "*", "x", 1)) {
				t.Fatalf("mx %q", m)
			}
		}
	})
}

func FuzzSelectRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := SelectRecord([]string{s})
		if err == nil && (r.ID == "" || len(r.ID) > 32 || !alnum(r.ID)) {
			t.Fatalf("%q gave id %q", s, r.ID)
		}
	})
}

// TestPublish: what we publish parses back to the same policy, its
// record to a valid id, and the id changes with the policy.
func TestPublish(t *testing.T) {
	p := Policy{Mode: Enforce, MaxAge: 7 * 24 * time.Hour, MX: []string{"mx1.example.net", "*.mx.example.net"}}
	file, rec := Publish(p)
	got, err := ParsePolicy([]byte(file))
	if err != nil || got.Mode != p.Mode || got.MaxAge != p.MaxAge || strings.Join(got.MX, " ") != strings.Join(p.MX, " ") {
		t.Fatalf("%q parses to %+v %v", file, got, err)
	}
	r, err := ParseRecord(rec)
	if err != nil || len(r.ID) != 16 {
		t.Fatalf("record %q: %+v %v", rec, r, err)
	}
	p.Mode = Testing
	if _, rec2 := Publish(p); rec2 == rec {
		t.Error("the id did not change with the policy")
	}
}
