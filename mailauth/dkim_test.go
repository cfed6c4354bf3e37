package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"gopkg.in/yaml.v3"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// testResolver serves TXT records from a dnstest server.
func testResolver(t testing.TB, txt map[string]string) (*resolver.Resolver, *dnstest.Server) {
	t.Helper()
	srv := dnstest.New(t, "")
	for name, v := range txt {
		srv.AddTXT(name, v)
	}
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return res, srv
}

// crlf turns LF line endings into CRLF, as the suites ask.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

func runDKIM(t testing.TB, res Resolver, msg []byte, max int) []DKIMResult {
	t.Helper()
	h, err := ReadHeader(bufio.NewReader(bytes.NewReader(msg)), 0)
	if err != nil {
		t.Fatal(err)
	}
	return verifyDKIM(context.Background(), res, &keyCache{}, h, bytes.NewReader(msg), max)
}

// readDNSLines reads "<owner> <TXT value>" lines.
func readDNSLines(t *testing.T, text string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		owner, val, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad DNS line %q", line)
		}
		m[owner] = strings.TrimSpace(val)
	}
	return m
}

func TestDKIMRFC8463(t *testing.T) {
	dir := "testdata/dkim/rfc8463"
	dnsText, err := os.ReadFile(filepath.Join(dir, "dns.txt"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := os.ReadFile(filepath.Join(dir, "signed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	res, _ := testResolver(t, readDNSLines(t, string(dnsText)))
	rs := runDKIM(t, res, crlf(msg), 5)
	want := []struct {
		a, s string
		bits int
	}{{"ed25519-sha256", "brisbane", 256}, {"rsa-sha256", "test", 1024}}
	if len(rs) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(rs), len(want), rs)
	}
	for i, w := range want {
		r := rs[i]
		if r.Result != DKIMPass || r.Algorithm != w.a || r.Selector != w.s || r.Domain != "football.example.com" || r.KeyBits != w.bits || len(r.B) != 8 {
			t.Errorf("signature %d: %+v, want pass %s s=%s %d bits", i, r, w.a, w.s, w.bits)
		}
	}
	// LF line endings verify too (the milter and CLI get either).
	if rs := runDKIM(t, res, msg, 5); rs[0].Result != DKIMPass || rs[1].Result != DKIMPass {
		t.Errorf("LF copy: %+v", rs)
	}
}

func TestDKIMDkimpy(t *testing.T) {
	dir := "testdata/dkim/dkimpy"
	data, err := os.ReadFile(filepath.Join(dir, "fixtures.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var fixtures []struct {
		Message string
		Note    string
		DNS     map[string]string
		Results []struct {
			SignatureIndex int `yaml:"signature_index"`
			A              string
			Expect         string
		}
	}
	if err := yaml.Unmarshal(data, &fixtures); err != nil {
		t.Fatal(err)
	}
	if len(fixtures) < 6 {
		t.Fatalf("only %d fixtures", len(fixtures))
	}
	for _, f := range fixtures {
		t.Run(f.Message, func(t *testing.T) {
			txt := map[string]string{}
			for name, v := range f.DNS {
				if strings.HasPrefix(v, "@") {
					b, err := os.ReadFile(filepath.Join(dir, v[1:]))
					if err != nil {
						t.Fatal(err)
					}
					v = strings.TrimSpace(string(b))
				}
				if strings.ContainsAny(name, "()") {
					continue // not a valid DNS name; the lookup must not happen anyway
				}
				txt[name] = v
			}
			msg, err := os.ReadFile(filepath.Join(dir, f.Message))
			if err != nil {
				t.Fatal(err)
			}
			res, _ := testResolver(t, txt)
			rs := runDKIM(t, res, crlf(msg), 5)
			for _, want := range f.Results {
				if want.SignatureIndex >= len(rs) {
					t.Fatalf("%s: no signature %d in %+v", f.Note, want.SignatureIndex, rs)
				}
				r := rs[want.SignatureIndex]
				if r.Algorithm != want.A {
					t.Errorf("%s: a=%s, want %s", f.Note, r.Algorithm, want.A)
				}
				if (r.Result == DKIMPass) != (want.Expect == "pass") {
					t.Errorf("%s: signature %d %s (%s), want %s", f.Note, want.SignatureIndex, r.Result, r.Error, want.Expect)
				}
			}
		})
	}
}

func TestDKIMStalwart(t *testing.T) {
	dir := "testdata/dkim/stalwart-mail-auth"
	for _, n := range []string{"001", "002", "003", "004", "005", "006"} {
		t.Run(n, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, n+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			dnsPart, msg, ok := strings.Cut(string(data), "\n\n")
			if !ok {
				t.Fatal("no blank line after the DNS records")
			}
			res, _ := testResolver(t, readDNSLines(t, dnsPart))
			rs := runDKIM(t, res, crlf([]byte(msg)), 10)
			if len(rs) == 0 {
				t.Fatal("no signatures found")
			}
			last := rs[len(rs)-1]
			want := DKIMPass
			if n == "005" {
				// x= expired on 2022-11-08: RFC 6376 3.5 makes it permerror.
				want = DKIMPermError
			}
			if last.Result != want {
				t.Errorf("last signature %s (%s), want %s", last.Result, last.Error, want)
			}
			if want == DKIMPass && last.KeyBits == 0 {
				t.Errorf("key size not reported: %+v", last)
			}
		})
	}
}

const plainMessage = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Invoice 42\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nPlease pay.\r\n"

// sign signs msg with an RSA or Ed25519 key.
func sign(t testing.TB, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	var out bytes.Buffer
	opts := &dkim.SignOptions{Domain: domain, Selector: selector,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "From", "To", "Subject", "Date", "Message-ID"}}
	opts.Signer = key
	if err := dkim.Sign(&out, strings.NewReader(msg), opts); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// keyRecord is the DNS key record of key.
func keyRecord(t testing.TB, key crypto.Signer) string {
	t.Helper()
	switch k := key.(type) {
	case *rsa.PrivateKey:
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PrivateKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
	}
	t.Fatalf("key type %T", key)
	return ""
}

// testKeys are generated once per test binary.
var testKeys = struct {
	rsa *rsa.PrivateKey
	ed  ed25519.PrivateKey
}{}

func keys(t testing.TB) (*rsa.PrivateKey, ed25519.PrivateKey) {
	t.Helper()
	if testKeys.rsa == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		testKeys.rsa, testKeys.ed = k, ed
	}
	return testKeys.rsa, testKeys.ed
}

func TestDKIMCases(t *testing.T) {
	rk, ek := keys(t)
	good := sign(t, sign(t, plainMessage, "example.org", "rsa", rk), "example.org", "ed", ek)
	txt := map[string]string{
		"rsa._domainkey.example.org": keyRecord(t, rk),
		"ed._domainkey.example.org":  keyRecord(t, ek),
	}
	res, srv := testResolver(t, txt)
	srv.ServFail("flaky._domainkey.example.org")

	tests := []struct {
		name string
		msg  string
		want []DKIMStatus
	}{
		{"rsa and ed25519 pass", good, []DKIMStatus{DKIMPass, DKIMPass}},
		{"tampered body", strings.Replace(good, "Please pay.", "Please pay me.", 1), []DKIMStatus{DKIMFail, DKIMFail}},
		{"tampered header", strings.Replace(good, "Subject: Invoice 42", "Subject: Invoice 43", 1), []DKIMStatus{DKIMFail, DKIMFail}},
		{"missing key", sign(t, plainMessage, "example.org", "gone", rk), []DKIMStatus{DKIMPermError}},
		{"temporary DNS failure", sign(t, plainMessage, "example.org", "flaky", rk), []DKIMStatus{DKIMTempError}},
		{"no signature", plainMessage, []DKIMStatus{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := runDKIM(t, res, []byte(tc.msg), 5)
			var got []DKIMStatus
			for _, r := range rs {
				got = append(got, r.Result)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v (%+v)", got, tc.want, rs)
			}
		})
	}
	rs := runDKIM(t, res, []byte(good), 5)
	// The topmost signature is the one added last: ed25519.
	if rs[0].Selector != "ed" || rs[0].KeyBits != 256 || rs[1].Selector != "rsa" || rs[1].KeyBits != 2048 {
		t.Errorf("order or key sizes wrong: %+v", rs)
	}

	// More signatures than the cap: the first five are checked, the rest
	// reported as not checked.
	many := plainMessage
	for range 7 {
		many = sign(t, many, "example.org", "ed", ek)
	}
	rs = runDKIM(t, res, []byte(many), 5)
	if len(rs) != 7 {
		t.Fatalf("%d results for 7 signatures", len(rs))
	}
	for i, r := range rs {
		want := DKIMPass
		if i >= 5 {
			want = DKIMNeutral
		}
		if r.Result != want || (i >= 5 && !strings.Contains(r.Error, "not checked")) {
			t.Errorf("signature %d: %s %q, want %s", i, r.Result, r.Error, want)
		}
	}
}
