package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

func signWith(t testing.TB, msg string, key crypto.Signer, hc, bc dkim.Canonicalization) string {
	t.Helper()
	var out bytes.Buffer
	opts := &dkim.SignOptions{Domain: "example.org", Selector: "s", Signer: key,
		HeaderCanonicalization: hc, BodyCanonicalization: bc,
		HeaderKeys: []string{"From", "To", "Subject", "Date"}}
	if err := dkim.Sign(&out, strings.NewReader(msg), opts); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// Our verifier against the library's signer, every canonicalization,
// with the changes each one tolerates and the ones it does not.
func TestDKIMCanonicalizations(t *testing.T) {
	rk, _ := keys(t)
	res, _ := testResolver(t, map[string]string{"s._domainkey.example.org": keyRecord(t, rk)})
	msg := "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject:  Invoice\r\n\t42\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nPlease  pay.\r\n\r\n\r\n"
	c := []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed}
	for _, hc := range c {
		for _, bc := range c {
			signed := signWith(t, msg, rk, hc, bc)
			name := string(hc) + "/" + string(bc)
			check := func(what, m string, want DKIMStatus) {
				t.Helper()
				rs := runDKIM(t, res, []byte(m), 5)
				if len(rs) != 1 || rs[0].Result != want {
					t.Errorf("%s %s: %+v, want %s", name, what, rs, want)
				}
			}
			check("as signed", signed, DKIMPass)
			check("LF line endings", strings.ReplaceAll(signed, "\r\n", "\n"), DKIMPass)
			check("trailing empty lines added", signed+"\r\n\r\n", DKIMPass)
			headerWS := strings.Replace(signed, "Subject:  Invoice", "Subject: Invoice ", 1)
			bodyWS := strings.Replace(signed, "Please  pay.", "Please pay. ", 1)
			check("header white space", headerWS, map[bool]DKIMStatus{true: DKIMPass, false: DKIMFail}[hc == dkim.CanonicalizationRelaxed])
			check("body white space", bodyWS, map[bool]DKIMStatus{true: DKIMPass, false: DKIMFail}[bc == dkim.CanonicalizationRelaxed])
			check("body changed", strings.Replace(signed, "Please", "Pleas", 1), DKIMFail)
			check("From changed", strings.Replace(signed, "alice@example.org", "alice@example.com", 1), DKIMFail)
		}
	}
}

func TestBodyCanon(t *testing.T) {
	tests := []struct {
		in              string
		simple, relaxed string
	}{
		{"", "\r\n", ""},
		{"\r\n\r\n", "\r\n", ""},
		{"a\r\n", "a\r\n", "a\r\n"},
		{"a", "a\r\n", "a\r\n"},
		{"a\n\n\n", "a\r\n", "a\r\n"},
		{" a  b \t\r\n", " a  b \t\r\n", " a b\r\n"},
		{"a\r\n \r\n\r\nb\r\n", "a\r\n \r\n\r\nb\r\n", "a\r\n\r\n\r\nb\r\n"},
		{"a\r\n \t\r\n", "a\r\n \t\r\n", "a\r\n"},
		{"a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
		{"a\r", "a\r\r\n", "a\r\r\n"},
	}
	for _, tc := range tests {
		for _, relaxed := range []bool{false, true} {
			want := tc.simple
			if relaxed {
				want = tc.relaxed
			}
			// Written whole, and byte by byte: the state carries over.
			for _, step := range []int{len(tc.in) + 1, 1} {
				var out bytes.Buffer
				c := &bodyCanon{w: &out, relaxed: relaxed, limit: -1}
				for i := 0; i < len(tc.in); i += step {
					c.Write([]byte(tc.in[i:min(i+step, len(tc.in))]))
				}
				c.close()
				if out.String() != want {
					t.Errorf("relaxed=%v step %d: %q → %q, want %q", relaxed, step, tc.in, out.String(), want)
				}
			}
		}
	}
	// l= counts canonical bytes.
	var out bytes.Buffer
	c := &bodyCanon{w: &out, relaxed: true, limit: 4}
	c.Write([]byte("ab  cd\r\nef\r\n"))
	c.close()
	if out.String() != "ab c" {
		t.Errorf("limit 4: %q", out.String())
	}
}

// handSigned signs a message with the tags given, as a forger or an old
// signer would write them (the library's signer writes no l=, x= or
// rsa-sha1).
func handSigned(t *testing.T, key crypto.Signer, tags, body string) string {
	t.Helper()
	header := "From: alice@example.org\r\nSubject: hi\r\n"
	bh := sha256.Sum256([]byte(body))
	sigv := " v=1; a=" + map[bool]string{true: "ed25519-sha256", false: "rsa-sha256"}[isEd(key)] +
		"; c=simple/simple; d=example.org; s=s; h=From:Subject; bh=" + base64.StdEncoding.EncodeToString(bh[:]) + "; " + tags + "b="
	h := sha256.New()
	h.Write([]byte(header))
	h.Write([]byte("DKIM-Signature:" + sigv))
	sum := h.Sum(nil)
	var sig []byte
	var err error
	if isEd(key) {
		sig, err = key.Sign(nil, sum, crypto.Hash(0))
	} else {
		sig, err = key.Sign(rand.Reader, sum, crypto.SHA256)
	}
	if err != nil {
		t.Fatal(err)
	}
	return "DKIM-Signature:" + sigv + base64.StdEncoding.EncodeToString(sig) + "\r\n" + header + "\r\n" + body
}

func TestDKIMTags(t *testing.T) {
	rk, ek := keys(t)
	res, srv := testResolver(t, map[string]string{"s._domainkey.example.org": keyRecord(t, rk)})
	body := "Hello.\r\n"
	future := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()
	tests := []struct {
		name, msg string
		want      DKIMStatus
		why       string
	}{
		{"plain", handSigned(t, rk, "", body), DKIMPass, ""},
		{"l= covers the body", handSigned(t, rk, "l=8; ", body), DKIMPass, ""},
		{"l= with text appended", handSigned(t, rk, "l=8; ", body) + "Appended by a forger.\r\n", DKIMPass, ""},
		{"l= longer than the body", handSigned(t, rk, "l=9; ", body), DKIMFail, "shorter than l="},
		{"x= in the future", handSigned(t, rk, itoaTag("x", future), body), DKIMPass, ""},
		{"x= in the past", handSigned(t, rk, itoaTag("x", past), body), DKIMPermError, "expired"},
		{"i= outside d=", handSigned(t, rk, "i=a@example.com; ", body), DKIMPermError, "i= domain"},
		{"i= in a subdomain", handSigned(t, rk, "i=a@sub.example.org; ", body), DKIMPass, ""},
		{"wrong key type", handSigned(t, ek, "", body), DKIMPermError, "key type"},
	}
	for _, tc := range tests {
		rs := runDKIM(t, res, []byte(tc.msg), 5)
		if len(rs) != 1 || rs[0].Result != tc.want || !strings.Contains(rs[0].Error, tc.why) {
			t.Errorf("%s: %+v, want %s (%s)", tc.name, rs, tc.want, tc.why)
		}
	}
	// Signatures refused before any lookup.
	before := srv.Queries()
	for _, tc := range []struct{ name, sig, why string }{
		{"rsa-sha1", "v=1; a=rsa-sha1; d=example.org; s=s; h=from; bh=AAAA; b=AAAA", "rsa-sha1"},
		{"From not signed", "v=1; a=rsa-sha256; d=example.org; s=s; h=subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA", "From field not signed"},
		{"duplicate tag", "v=1; a=rsa-sha256; d=example.org; d=bank.example; s=s; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA", "twice"},
		{"selector not a name", "v=1; a=rsa-sha256; d=example.org; s=" + strings.Repeat("x", 70) + "; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA", "s= tag"},
		{"selector with a space", "v=1; a=rsa-sha256; d=example.org; s=a b; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA", "s= tag"},
		{"missing bh", "v=1; a=rsa-sha256; d=example.org; s=s; h=from; b=AAAA", "bh="},
		// A forger's list long enough to make the duplicate check cost.
		{"too many tags", "v=1; a=rsa-sha256; d=example.org; s=s; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA" + manyTags(5000), "more than 64 tags"},
		{"duplicate after many", "v=1; a=rsa-sha256; d=example.org; s=s; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA" + manyTags(50) + "; d=bank.example", "twice"},
	} {
		rs := runDKIM(t, res, []byte("DKIM-Signature: "+tc.sig+"\r\nFrom: a@example.org\r\n\r\nx\r\n"), 5)
		if len(rs) != 1 || rs[0].Result != DKIMPermError || !strings.Contains(rs[0].Error, tc.why) {
			t.Errorf("%s: %+v, want permerror (%s)", tc.name, rs, tc.why)
		}
	}
	if srv.Queries() != before {
		t.Errorf("%d lookups for signatures refused on sight", srv.Queries()-before)
	}
}

// manyTags is "; x0=0; x1=1; ..." with n tags.
func manyTags(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "; x%d=%d", i, i)
	}
	return b.String()
}

func itoaTag(name string, v int64) string {
	return name + "=" + strconv.FormatInt(v, 10) + "; "
}

func isEd(k crypto.Signer) bool {
	_, ok := k.(ed25519.PrivateKey)
	return ok
}

// Issue 10.10: when the deadline has passed, the verifier stops instead
// of hashing on after the milter has answered.
func TestDKIMStopsAtDeadline(t *testing.T) {
	rk, _ := keys(t)
	res, _ := testResolver(t, map[string]string{"s._domainkey.example.org": keyRecord(t, rk)})
	msg := signWith(t, plainMessage+strings.Repeat("A line of body text.\r\n", 200000), rk, dkim.CanonicalizationRelaxed, dkim.CanonicalizationRelaxed)
	h, err := ReadHeader(bufio.NewReader(strings.NewReader(msg)), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rs := verifyDKIM(ctx, res, nil, h, strings.NewReader(msg), 5)
	if len(rs) != 1 || rs[0].Result != DKIMTempError || !strings.Contains(rs[0].Error, "context canceled") {
		t.Fatalf("%+v", rs)
	}
	if rs := verifyDKIM(context.Background(), res, &keyCache{}, h, strings.NewReader(msg), 5); rs[0].Result != DKIMPass {
		t.Fatalf("with time: %+v", rs)
	}
}

// refCanon is the canonicaliser written byte by byte, as it was before
// Write copied runs: the reference the fuzzer compares with.
func refCanon(in []byte, relaxed bool) string {
	var out []byte
	empty, content, wsp, cr := 0, false, false, false
	char := func(b byte) {
		if relaxed && (b == ' ' || b == '\t') {
			wsp = true
			return
		}
		if !content {
			for ; empty > 0; empty-- {
				out = append(out, "\r\n"...)
			}
			content = true
		}
		if wsp {
			out = append(out, ' ')
			wsp = false
		}
		out = append(out, b)
	}
	for _, b := range in {
		if cr {
			cr = false
			if b != '\n' {
				char('\r')
			}
		}
		switch b {
		case '\r':
			cr = true
		case '\n':
			wsp = false
			if content {
				out = append(out, "\r\n"...)
				content = false
			} else {
				empty++
			}
		default:
			char(b)
		}
	}
	if cr {
		char('\r')
	}
	if content {
		out = append(out, "\r\n"...)
	}
	if !relaxed && len(out) == 0 {
		out = append(out, "\r\n"...)
	}
	return string(out)
}

// FuzzBodyCanon: the canonicaliser, written in chunks of any size,
// gives what the byte-by-byte reference gives.
func FuzzBodyCanon(f *testing.F) {
	for _, s := range []string{"", "a", "a \t b  \r\n\r\n", "\r\r\n\n x\r", "line\nline\r\n\r\n\r\n", " \t\r\n \r\nx"} {
		f.Add([]byte(s), true, uint8(1))
		f.Add([]byte(s), false, uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, relaxed bool, chunk uint8) {
		step := int(chunk) + 1
		var out bytes.Buffer
		c := &bodyCanon{w: &out, relaxed: relaxed, limit: -1}
		for i := 0; i < len(in); i += step {
			c.Write(in[i:min(i+step, len(in))])
		}
		c.close()
		if want := refCanon(in, relaxed); out.String() != want {
			t.Fatalf("relaxed=%v step %d: %q → %q, want %q", relaxed, step, in, out.String(), want)
		}
	})
}

func TestNoWSP(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"abc", "abc"},
		{" a b\tc\r\n d ", "abcd"},
		{"\r\n\t ", ""},
		{"ab\xffc d", "ab\xffcd"}, // bytes that are not UTF-8 stay as they are
	} {
		if got := noWSP(tc.in); got != tc.want {
			t.Errorf("noWSP(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
