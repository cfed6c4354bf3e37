package mailauth

import (
	"bytes"
	"context"
	"crypto"
	"net"
	"testing"
	"time"

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
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
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
