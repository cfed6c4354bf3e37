package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"slices"
	"strings"
	"testing"
)

// FuzzFromHeader: whatever one From field holds, a second From naming
// ceo@bank.example is never hidden (issue 10.3), every domain read is a
// lower-case A-label, and a message with no domain says why. The first
// field is also evaluated alone, and its addresses must carry the
// domains AuthorDomains reports.
func FuzzFromHeader(f *testing.F) {
	for _, s := range []string{
		"ceo@bank.example;", "x@[127.0.0.1]", "a@b.example (unterminated", "\"quote <a@b.example>",
		"junk@", "@", "team: a@x.example, b@y.example;", "=?utf-8?q?a=40b?= <c@d.example>",
		"a@bücher.example", "<@route:a@b.example>", "a@b.example\r\n c@d.example", "\\\"a@b\\\"@c.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		v = oneField(v)
		for _, order := range []string{"first", "second"} {
			msg := "From: " + v + "\r\nFrom: ceo@bank.example\r\n\r\n"
			if order == "second" {
				msg = "From: ceo@bank.example\r\nFrom: " + v + "\r\n\r\n"
			}
			h, err := ReadHeader(bufio.NewReader(strings.NewReader(msg)), 0)
			if err != nil {
				t.Fatal(err)
			}
			domains, _ := AuthorDomains(h)
			if !slices.Contains(domains, "bank.example") {
				t.Fatalf("%q (%s) hides bank.example: %v", v, order, domains)
			}
			for _, d := range domains {
				if d == "" || d != strings.ToLower(d) || strings.ContainsAny(d, " \t\r\n<>()[],;:@\\\"") {
					t.Fatalf("author domain %q from %q", d, v)
				}
			}
		}
		h, _ := ReadHeader(bufio.NewReader(strings.NewReader("From: "+v+"\r\n\r\n")), 0)
		domains, why := AuthorDomains(h)
		addrs, why2 := AuthorAddresses(h)
		if len(domains) == 0 && why == "" || len(addrs) == 0 && why2 == "" {
			t.Fatalf("%q: no domain and no reason", v)
		}
		for _, a := range addrs {
			if !slices.Contains(domains, a[strings.LastIndexByte(a, '@')+1:]) {
				t.Fatalf("%q: address %s outside domains %v", v, a, domains)
			}
		}
	})
}

// oneField keeps v one field value: a line break survives only as
// folding (CRLF then white space).
func oneField(v string) string {
	b := []byte(v)
	for i, c := range b {
		if c == '\n' && !(i > 0 && b[i-1] == '\r' && i+1 < len(b) && (b[i+1] == ' ' || b[i+1] == '\t')) {
			b[i] = ' '
		}
	}
	return string(b)
}

// staticTXT answers key lookups from a map, NXDOMAIN otherwise.
type staticTXT map[string][]string

func (s staticTXT) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := s[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (s staticTXT) LookupMX(context.Context, string) ([]*net.MX, error) { return nil, s.nx() }
func (s staticTXT) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	return nil, s.nx()
}
func (s staticTXT) LookupAddr(context.Context, string) ([]string, error) { return nil, s.nx() }
func (s staticTXT) Exists(context.Context, string) (bool, error)         { return false, nil }
func (staticTXT) nx() error                                              { return &net.DNSError{Err: "no such host", IsNotFound: true} }

// FuzzFoldedHeader: header sections with long folded fields, in a
// message signed with relaxed canonicalization. The parser keeps every
// byte of a field (unfolding it gives back what was folded), the DKIM
// verifier neither panics nor passes a message whose signed fields were
// changed, and one result comes per signature.
func FuzzFoldedHeader(f *testing.F) {
	rk, _ := keys(f)
	txt := staticTXT{"sel._domainkey.example.org": {keyRecord(f, rk)}}
	signed := sign(f, plainMessage, "example.org", "sel", rk)
	f.Add("X-Fold", " a", uint16(2000), false)
	f.Add("Subject", "\tInvoice", uint16(300), true)
	f.Add("From", " evil@example.com", uint16(3), true)
	f.Add("DKIM-Signature", " v=1; d=example.org", uint16(50), false)
	f.Fuzz(func(t *testing.T, name, line string, n uint16, top bool) {
		if !ValidFieldName(name) || strings.ContainsAny(line, "\r\n") || line == "" || (line[0] != ' ' && line[0] != '\t') {
			return
		}
		var field strings.Builder
		field.WriteString(name + ":x")
		for range int(n) % 5000 {
			field.WriteString("\r\n" + line)
		}
		field.WriteString("\r\n")
		msg := field.String() + signed
		if !top {
			i := strings.Index(signed, "\r\n\r\n")
			msg = signed[:i+2] + field.String() + signed[i+2:]
		}
		h, err := ReadHeader(bufio.NewReader(strings.NewReader(msg)), 0)
		if err != nil {
			t.Fatal(err)
		}
		var got *Field
		for i := range h.Fields {
			if h.Fields[i].Name == name && strings.HasPrefix(h.Fields[i].Raw, "x") {
				got = &h.Fields[i]
				break
			}
		}
		if got == nil || "x"+strings.Repeat(line, int(n)%5000) != strings.ReplaceAll(got.Raw, "\r\n", "") {
			t.Fatalf("field %s not kept whole", name)
		}
		rs := verifyDKIM(context.Background(), txt, &keyCache{}, h, bytes.NewReader([]byte(msg)), 5)
		sigs := len(h.Values("DKIM-Signature"))
		if len(rs) != sigs {
			t.Fatalf("%d results for %d signatures", len(rs), sigs)
		}
		// From is signed once more than it occurs: another From anywhere
		// breaks the signature. To, Subject, Date and Message-ID are
		// signed as often as they occur, bottom up: one added below
		// the others is the one verified.
		signedName := strings.EqualFold(name, "From") || !top &&
			slices.ContainsFunc([]string{"To", "Subject", "Date", "Message-ID"}, func(s string) bool { return strings.EqualFold(s, name) })
		for _, r := range rs {
			if r.Domain == "example.org" && r.Result == DKIMPass && signedName {
				t.Fatalf("pass with an added %s field", name)
			}
		}
	})
}

// TestIgnorableInDomain: characters IDNA maps to nothing neither empty a
// From domain nor hide the one a reader sees: "@\u034f" has no domain,
// and "bank.example" with a combining grapheme joiner in front is
// bank.example, whose DMARC policy then applies.
func TestIgnorableInDomain(t *testing.T) {
	for from, want := range map[string]string{
		"ceo@\u034f":             "",
		"ceo@\u034fbank.example": "bank.example",
		"ceo@bank\u00ad.example": "bank.example", // a soft hyphen
	} {
		h, _ := ReadHeader(bufio.NewReader(strings.NewReader("From: "+from+"\r\n\r\n")), 0)
		domains, why := AuthorDomains(h)
		got := strings.Join(domains, ",")
		if got != want || want == "" && why == "" {
			t.Errorf("From %q: domains %q (%s), want %q", from, got, why, want)
		}
	}
}
