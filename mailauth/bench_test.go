package mailauth

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// benchmarkVerify runs the whole engine on a message signed with key,
// from a client the author's SPF allows, with a warm DNS cache: the cost
// of verification itself (canonicalization, hashing, the signature,
// DMARC logic), not of the network.
func benchmarkVerify(b *testing.B, key crypto.Signer) {
	srv := dnstest.New(b, `
example.org.        300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"
1.2.0.192.in-addr.arpa. 300 IN PTR mail.example.org.
mail.example.org.   300 IN A   192.0.2.1
example.          300 IN SOA ns.example. h.example. 1 3600 600 86400 3600
org.              300 IN SOA ns.org. h.org. 1 3600 600 86400 3600
`)
	srv.AddTXT("sel._domainkey.example.org", keyRecord(b, key))
	rc := resolver.Default() // with its cache
	rc.ResolvConf, rc.Servers, rc.Timeout = "", []string{srv.Addr()}, time.Second
	res, err := resolver.New(rc)
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(res, Config{AuthservID: "mx.test"})
	msg := []byte(sign(b, plainMessage, "example.org", "sel", key))
	env := Envelope{ClientIP: net.ParseIP("192.0.2.1"), Helo: "mail.example.org", MailFrom: "alice@example.org"}
	v, err := e.Verify(context.Background(), env, bytes.NewReader(msg))
	if err != nil || v.DMARC.Result != "pass" || v.DKIM[0].Result != DKIMPass {
		b.Fatalf("warm-up verdict %+v %v", v, err)
	}
	before := srv.Queries()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.Verify(context.Background(), env, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if n := srv.Queries() - before; n > 0 {
		b.Fatalf("%d DNS queries with a warm cache", n)
	}
}

func BenchmarkVerifyRSA2048(b *testing.B) {
	rk, _ := keys(b)
	benchmarkVerify(b, rk)
}

func BenchmarkVerifyEd25519(b *testing.B) {
	_, ek := keys(b)
	benchmarkVerify(b, ek)
}

// foldedField is a header field of n bytes folded into " a" lines, the
// shape that made header parsing quadratic (issue 10.10).
func foldedField(n int) string {
	var b strings.Builder
	b.WriteString("X-Fold:")
	for b.Len() < n {
		b.WriteString(" a\r\n")
	}
	return b.String()
}

// BenchmarkReadHeaderFolded shows the header reader's cost linear in the
// size of a folded field: ns/op grows with size, ns/byte (reported) stays.
func BenchmarkReadHeaderFolded(b *testing.B) {
	for _, n := range []int{100 << 10, 300 << 10, 900 << 10} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			msg := []byte("From: a@example.org\r\n" + foldedField(n) + "Subject: x\r\n\r\nbody\r\n")
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := ReadHeader(bufio.NewReader(bytes.NewReader(msg)), 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDKIMFolded verifies a signature over a message with nine
// folded 100 KiB fields, the Postfix-sized attack, signed with relaxed
// header canonicalization that covers them.
func BenchmarkDKIMFolded(b *testing.B) {
	rk, _ := keys(b)
	res, _ := testResolver(b, map[string]string{"s._domainkey.example.org": keyRecord(b, rk)})
	for _, fields := range []int{1, 3, 9} {
		b.Run(fmt.Sprintf("%dx100KiB", fields), func(b *testing.B) {
			msg := "From: a@example.org\r\n" + strings.Repeat(foldedField(100<<10), fields) + "Subject: x\r\n\r\nbody\r\n"
			var out bytes.Buffer
			if err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: "example.org", Selector: "s", Signer: rk,
				HeaderCanonicalization: dkim.CanonicalizationRelaxed, HeaderKeys: append([]string{"From", "Subject"}, slices.Repeat([]string{"X-Fold"}, fields)...)}); err != nil {
				b.Fatal(err)
			}
			signed := out.Bytes()
			b.SetBytes(int64(len(signed)))
			for b.Loop() {
				h, err := ReadHeader(bufio.NewReader(bytes.NewReader(signed)), 0)
				if err != nil {
					b.Fatal(err)
				}
				if rs := verifyDKIM(context.Background(), res, &keyCache{}, h, bytes.NewReader(signed), 5); rs[0].Result != DKIMPass {
					b.Fatalf("%+v", rs)
				}
			}
		})
	}
}
