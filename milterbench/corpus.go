// Package milterbench replays a corpus of messages against one milter or
// a chain of milters, speaking to them as Postfix does, and measures
// throughput, latency and how often each milter's verdict matches what
// the corpus expects. It also generates such a corpus, with the DNS zone
// its senders need.
package milterbench

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/wehr/wehr/resolver/dnstest"
)

// Entry is one message of a corpus with its envelope and expectations.
type Entry struct {
	File     string `json:"file"`
	Kind     string `json:"kind"`
	IP       string `json:"ip"`
	Helo     string `json:"helo"`
	MailFrom string `json:"mail_from"`
	Rcpt     string `json:"rcpt"`
	// Expectations: the first dkim result in the A-R the milter adds
	// ("" = not checked), and wehr's action.
	DKIM   string `json:"dkim"`
	Action string `json:"action"`
}

// Manifest describes a corpus directory: manifest.json, zone.txt and the
// message files.
type Manifest struct {
	Entries []Entry `json:"entries"`
}

// LoadManifest reads DIR/manifest.json.
func LoadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("corpus: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("corpus: manifest.json: %w", err)
	}
	if len(m.Entries) == 0 {
		return nil, fmt.Errorf("corpus: %s: no entries", dir)
	}
	return &m, nil
}

// The corpus world: a sender that signs with RSA, one with Ed25519, one
// with both; a bank with p=reject; a forger; a forwarder; a list.
const baseZone = `
rsa.example.       300 IN TXT "v=spf1 ip4:192.0.2.11 -all"
_dmarc.rsa.example. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@rsa.example"
ed.example.        300 IN TXT "v=spf1 ip4:192.0.2.12 -all"
_dmarc.ed.example. 300 IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@ed.example"
dual.example.      300 IN TXT "v=spf1 ip4:192.0.2.13 -all"
_dmarc.dual.example. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@dual.example"
bank.example.      300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.bank.example. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@bank.example"
evil.example.      300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
fwd.example.       300 IN TXT "v=spf1 ip4:192.0.2.20 -all"
lists.example.net. 300 IN TXT "v=spf1 ip4:192.0.2.30 -all"
11.2.0.192.in-addr.arpa. 300 IN PTR mail.rsa.example.
mail.rsa.example.  300 IN A 192.0.2.11
12.2.0.192.in-addr.arpa. 300 IN PTR mail.ed.example.
mail.ed.example.   300 IN A 192.0.2.12
13.2.0.192.in-addr.arpa. 300 IN PTR mail.dual.example.
mail.dual.example. 300 IN A 192.0.2.13
20.2.0.192.in-addr.arpa. 300 IN PTR mx.fwd.example.
mx.fwd.example.    300 IN A 192.0.2.20
30.2.0.192.in-addr.arpa. 300 IN PTR mail.lists.example.net.
mail.lists.example.net. 300 IN A 192.0.2.30
5.113.0.203.in-addr.arpa. 300 IN PTR mail.evil.example.
mail.evil.example. 300 IN A 203.0.113.5
example.           300 IN SOA ns.example. h.example. 1 3600 600 86400 300
net.               300 IN SOA ns.net. h.net. 1 3600 600 86400 300
`

// Generate writes a corpus of n messages (a mix of every kind) into dir.
func Generate(dir string, n int) error {
	if err := os.MkdirAll(filepath.Join(dir, "msg"), 0o755); err != nil {
		return err
	}
	zone := strings.TrimLeft(baseZone, "\n")
	keys := map[string]crypto.Signer{}
	for _, d := range []string{"rsa.example", "dual.example", "bank.example", "lists.example.net"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		keys["rsa/"+d] = k
		zone += txtLine("sel._domainkey."+d, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	}
	for _, d := range []string{"ed.example", "dual.example"} {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		keys["ed/"+d] = k
		zone += txtLine("ed._domainkey."+d, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey)))
	}
	sign := func(msg, alg, domain, sel string) (string, error) {
		var out bytes.Buffer
		err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: sel, Signer: keys[alg+"/"+domain],
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: []string{"From", "From", "To", "Subject", "Date", "Message-ID", "List-Id"}})
		return out.String(), err
	}
	body := strings.Repeat("This is the body of a benchmark message, of a realistic length.\r\n", 40)
	mk := func(i int, from, extra string) string {
		return fmt.Sprintf("From: %s\r\nTo: user@mx.test\r\nSubject: corpus message %d\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%d@corpus.test>\r\n%s\r\n%s", from, i, i, extra, body)
	}
	kinds := []string{"rsa", "ed25519", "dual", "forwarded", "broken", "spoofed", "list"}
	var m Manifest
	for i := 0; i < n; i++ {
		kind := kinds[i%len(kinds)]
		e := Entry{Kind: kind, Rcpt: "user@mx.test", File: fmt.Sprintf("msg/%05d-%s.eml", i, kind)}
		var msg string
		var err error
		switch kind {
		case "rsa":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "192.0.2.11", "mail.rsa.example", "b@rsa.example", "pass", "accept"
			msg, err = sign(mk(i, "news@rsa.example", ""), "rsa", "rsa.example", "sel")
		case "ed25519":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "192.0.2.12", "mail.ed.example", "b@ed.example", "pass", "accept"
			msg, err = sign(mk(i, "news@ed.example", ""), "ed", "ed.example", "ed")
		case "dual":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "192.0.2.13", "mail.dual.example", "b@dual.example", "pass", "accept"
			msg, err = sign(mk(i, "news@dual.example", ""), "rsa", "dual.example", "sel")
			if err == nil {
				msg, err = sign(msg, "ed", "dual.example", "ed")
			}
		case "forwarded":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "192.0.2.20", "mx.fwd.example", "user@fwd.example", "fail", "quarantine"
			msg, err = sign(mk(i, "statements@bank.example", ""), "rsa", "bank.example", "sel")
			msg += "-- \r\nforwarded\r\n"
		case "broken":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "192.0.2.11", "mail.rsa.example", "b@rsa.example", "fail", "accept"
			msg, err = sign(mk(i, "news@rsa.example", ""), "rsa", "rsa.example", "sel")
			msg = strings.Replace(msg, "corpus message", "corpus massage", 1)
		case "spoofed":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "203.0.113.5", "mail.evil.example", "x@evil.example", "none", "reject"
			msg = mk(i, "ceo@bank.example", "")
		case "list":
			e.IP, e.Helo, e.MailFrom, e.DKIM, e.Action = "192.0.2.30", "mail.lists.example.net", "l-bounces@lists.example.net", "pass", "quarantine"
			msg, err = sign(mk(i, "statements@bank.example", ""), "rsa", "bank.example", "sel")
			if err == nil {
				msg = "List-Id: <l.lists.example.net>\r\n" + msg + "-- \r\nlist footer\r\n"
				msg, err = sign(msg, "rsa", "lists.example.net", "sel")
			}
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, e.File), []byte(msg), 0o644); err != nil {
			return err
		}
		m.Entries = append(m.Entries, e)
	}
	b, _ := json.MarshalIndent(m, "", " ")
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "zone.txt"), []byte(zone), 0o644)
}

func txtLine(name, value string) string {
	return name + ". 300 IN TXT \"" + strings.Join(dnstest.TXTStrings(value), "\" \"") + "\"\n"
}
