package arc

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// The engine's messages per second on a message sealed twice (a list
// then a forwarder, RSA-2048), with ARC verification on and off, warm
// DNS cache: what verifying ARC costs the milter per message.
func BenchmarkEngineARC(b *testing.B) {
	srv := dnstest.New(b, engineZone)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	for _, d := range []string{"fwd.example", "lists.example.net"} {
		srv.AddTXT("arc._domainkey."+d, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	}
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1, CacheSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("A line of a newsletter, as lists send them.\r\n", 100)
	msg := strings.Replace(bankMessage, "The figures.\r\n", body, 1)
	for _, d := range []string{"lists.example.net", "fwd.example"} {
		msg = sealRSA(b, res, msg, d, key)
	}
	for _, on := range []bool{false, true} {
		name := "off"
		cfg := mailauth.Config{AuthservID: "mx.example.test", DMARC: mailauth.DefaultDMARC()}
		if on {
			name, cfg.ARC = "on", Verifier{}
		}
		e := mailauth.NewEngine(res, cfg)
		env := mailauth.Envelope{ClientIP: net.ParseIP("192.0.2.2"), Helo: "mx.fwd.example", MailFrom: "x@fwd.example"}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				v, err := e.Verify(context.Background(), env, strings.NewReader(msg))
				if err != nil || (on && v.ARC.Result != mailauth.ARCPass) {
					b.Fatal(err, v.ARC)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

func sealRSA(b *testing.B, res mailauth.Resolver, msg, domain string, key *rsa.PrivateKey) string {
	br := strings.NewReader(msg)
	h, err := mailauth.ReadHeader(bufioReader(br), 0)
	if err != nil {
		b.Fatal(err)
	}
	s, err := Seal(context.Background(), res, h, strings.NewReader(msg[h.Size:]), SealOptions{Domain: domain, Selector: "arc", Key: key,
		AuthservID: "mx." + domain, Results: "dmarc=pass header.from=bank.example", Headers: []string{"from", "to", "subject", "date"}, Now: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	return "ARC-Seal: " + s.Seal + "\r\nARC-Message-Signature: " + s.AMS + "\r\nARC-Authentication-Results: " + s.AAR + "\r\n" + msg
}

func bufioReader(r *strings.Reader) *bufio.Reader { return bufio.NewReader(r) }
