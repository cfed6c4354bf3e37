package authres

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	msgauth "github.com/emersion/go-msgauth/authres"
)

var update = flag.Bool("update", false, "rewrite golden files")

// cases are the headers the engine writes, one per golden file.
var cases = []struct {
	name    string
	id      string
	results []Result
}{
	{"none", "mx.example.net", nil},
	{"spf-pass", "mx.example.net", []Result{
		{Method: "spf", Value: "pass", Comment: "192.0.2.1 matched ip4:192.0.2.0/24", Props: []Prop{{Type: "smtp", Property: "mailfrom", Value: "alice@example.org"}}},
	}},
	{"full", "mx.example.net", []Result{
		{Method: "iprev", Value: "pass", Props: []Prop{{Type: "policy", Property: "iprev", Value: "192.0.2.1", Comment: "mail.example.org"}}},
		{Method: "auth", Value: "none"},
		{Method: "spf", Value: "fail", Comment: "example.org does not designate 192.0.2.1 as a permitted sender", Props: []Prop{{Type: "smtp", Property: "mailfrom", Value: "bounce+x=y@example.org"}}},
		{Method: "spf", Value: "none", Props: []Prop{{Type: "smtp", Property: "helo", Value: "mail.example.org"}}},
		{Method: "dkim", Value: "pass", Comment: "2048-bit key", Props: []Prop{
			{Type: "header", Property: "d", Value: "example.org"}, {Type: "header", Property: "s", Value: "2026a-rsa"},
			{Type: "header", Property: "a", Value: "rsa-sha256"}, {Type: "header", Property: "b", Value: "AbC/d+9="}}},
		{Method: "dkim", Value: "fail", Reason: "body hash did not verify", Props: []Prop{
			{Type: "header", Property: "d", Value: "lists.example.com"}, {Type: "header", Property: "s", Value: "k1"},
			{Type: "header", Property: "a", Value: "ed25519-sha256"}, {Type: "header", Property: "b", Value: "Qx8yZ1Lm"}}},
		{Method: "dmarc", Value: "fail", Comment: "p=reject; disposition quarantine; overrides mailing_list", Props: []Prop{
			{Type: "header", Property: "from", Value: "example.org"}, {Type: "policy", Property: "dmarc", Value: "reject"}}},
	}},
	{"quoting", "mx(1).example.net", []Result{
		{Method: "spf", Value: "neutral", Reason: `he said "hi" \ bye`, Props: []Prop{{Type: "smtp", Property: "mailfrom", Value: `"odd local"@example.org`}}},
		{Method: "auth", Value: "pass", Props: []Prop{{Type: "smtp", Property: "auth", Value: "alice@example.org"}}},
	}},
}

func TestGolden(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := "Authentication-Results: " + Fold(tc.id, tc.results, "\r\n") + "\r\n"
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
			for _, line := range strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n") {
				if len(line) > 78 && !strings.Contains(line, `"`) {
					t.Errorf("line longer than 78: %q", line)
				}
			}
		})
	}
}

// Every header we format parses back, folded or not, to what we wrote.
func TestRoundTrip(t *testing.T) {
	for _, tc := range cases {
		for _, v := range []string{Format(tc.id, tc.results), Fold(tc.id, tc.results, "\r\n"), Fold(tc.id, tc.results, "\n")} {
			id, got, err := Parse(v)
			if err != nil {
				t.Fatalf("%s: %v in %q", tc.name, err, v)
			}
			if id != tc.id {
				t.Errorf("%s: id %q, want %q", tc.name, id, tc.id)
			}
			want := tc.results
			// Comments on properties are not kept by Parse; result
			// comments are, with ";" written as ",".
			var norm []Result
			for _, r := range want {
				r.Comment = strings.ReplaceAll(r.Comment, ";", ",")
				var props []Prop
				for _, p := range r.Props {
					p.Comment = ""
					props = append(props, p)
				}
				r.Props = props
				norm = append(norm, r)
			}
			if !reflect.DeepEqual(got, norm) {
				t.Errorf("%s: parsed\n%+v\nwant\n%+v", tc.name, got, norm)
			}
		}
	}
}

// go-msgauth's parser reads what we write too (it cannot handle comments
// with ";", which we never write, nor quoted authserv-ids).
func TestGoMsgauthParses(t *testing.T) {
	for _, tc := range cases {
		if strings.ContainsAny(tc.id, "()") {
			continue
		}
		v := Format(tc.id, tc.results)
		id, rs, err := msgauth.Parse(v)
		if err != nil {
			t.Errorf("%s: go-msgauth: %v on %q", tc.name, err, v)
			continue
		}
		if id != tc.id || len(rs) != len(tc.results) {
			t.Errorf("%s: go-msgauth read id %q and %d results, want %q and %d", tc.name, id, len(rs), tc.id, len(tc.results))
		}
	}
}

func TestAuthservID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx.example.net; spf=pass", "mx.example.net"},
		{" mx.example.net 1; none", "mx.example.net"},
		{"(comment; with semicolon) mx.example.net; dkim=pass", "mx.example.net"},
		{"\r\n\t(nested (comment)) mx.example.net\r\n\t; spf=fail", "mx.example.net"},
		{`"quoted.example.net"; none`, "quoted.example.net"},
		{"mx.example.net(no space); none", "mx.example.net"},
	}
	for _, tc := range tests {
		got, err := AuthservID(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("AuthservID(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "   ", "(unterminated; x", "; spf=pass"} {
		if id, err := AuthservID(bad); err == nil {
			t.Errorf("AuthservID(%q) = %q, want an error", bad, id)
		}
	}
}

func TestParseOthers(t *testing.T) {
	// Headers other implementations write.
	tests := []struct {
		in      string
		id      string
		methods []string
	}{
		{"mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=20230601 header.b=Ab12Cd34;\r\n       spf=pass (google.com: domain of x@example.com designates 192.0.2.1 as permitted sender) smtp.mailfrom=x@example.com;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com",
			"mx.google.com", []string{"dkim", "spf", "dmarc"}},
		{"test.module;\n    dkim=pass (1024-bit rsa key sha256) header.d=marcbradshaw.net header.i=@marcbradshaw.net header.b=Wf2V9Xg+ header.a=rsa-sha256 header.s=google x-bits=1024;\n    dmarc=pass policy.published-domain-policy=none policy.applied-disposition=none header.from=marcbradshaw.net",
			"test.module", []string{"dkim", "dmarc"}},
		{"example.net 1; auth/1=pass smtp.auth=alice", "example.net", []string{"auth"}},
	}
	for _, tc := range tests {
		id, rs, err := Parse(tc.in)
		if err != nil || id != tc.id || len(rs) != len(tc.methods) {
			t.Fatalf("Parse(%q) = %q, %+v, %v", tc.in, id, rs, err)
		}
		for i, m := range tc.methods {
			if rs[i].Method != m {
				t.Errorf("result %d method %q, want %q", i, rs[i].Method, m)
			}
		}
	}
	_, rs, _ := Parse(tests[0].in)
	if v, _ := rs[1].Prop("smtp", "mailfrom"); v != "x@example.com" {
		t.Errorf("smtp.mailfrom = %q", v)
	}
	if rs[1].Comment == "" {
		t.Error("comment after the result lost")
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range cases {
		f.Add(Fold(tc.id, tc.results, "\r\n"))
	}
	f.Add("a; b=c (d; e) f.g=\"h\"@i")
	f.Fuzz(func(t *testing.T, s string) {
		id, rs, err := Parse(s)
		if err != nil {
			return
		}
		// What parses formats, and reparses to the same thing.
		v := Format(id, rs)
		id2, rs2, err := Parse(v)
		if err != nil {
			t.Fatalf("reformatted %q does not parse: %v (from %q)", v, err, s)
		}
		// Line breaks inside quoted strings become spaces.
		if id2 != strings.NewReplacer("\r", " ", "\n", " ").Replace(id) || len(rs2) != len(rs) {
			t.Fatalf("round trip changed %q %+v into %q %+v", id, rs, id2, rs2)
		}
	})
}
