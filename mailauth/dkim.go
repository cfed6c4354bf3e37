package mailauth

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIM result values (RFC 8601 2.7.1).
const (
	DKIMNone      = "none"
	DKIMPass      = "pass"
	DKIMFail      = "fail"
	DKIMNeutral   = "neutral"
	DKIMTempError = "temperror"
	DKIMPermError = "permerror"
)

// DKIMResult is the outcome for one DKIM-Signature field.
type DKIMResult struct {
	Result    string `json:"result"`
	Domain    string `json:"domain"`    // d=, lower-cased
	Selector  string `json:"selector"`  // s=
	Algorithm string `json:"algorithm"` // a=
	B         string `json:"b"`         // first 8 characters of b=, for header.b
	KeyBits   int    `json:"key_bits"`  // 0 when the key was not found
	Error     string `json:"error"`     // why it is not pass

	Identifier string `json:"-"` // i=
}

// sigTags are the tags of a DKIM-Signature we report; the library checks
// the rest.
type sigTags struct {
	d, s, a, b, i string
}

// parseSigTags reads the tag=value list of a DKIM-Signature value
// (RFC 6376 3.2), leniently: we only report, the library verifies.
func parseSigTags(v string) sigTags {
	var t sigTags
	for _, part := range strings.Split(v, ";") {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		val = strings.Join(strings.Fields(val), "")
		switch name {
		case "d":
			t.d = strings.ToLower(val)
		case "s":
			t.s = val
		case "a":
			t.a = strings.ToLower(val)
		case "b":
			t.b = val
		case "i":
			t.i = val
		}
	}
	return t
}

// shortB is the header.b value: the first 8 characters of the signature
// (RFC 6008), enough to tell signatures apart.
func shortB(b string) string {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}

// verifyDKIM checks up to max DKIM signatures of the message; the rest are
// reported neutral, not checked. Key lookups go through res with ctx.
func verifyDKIM(ctx context.Context, res Resolver, h Header, msg io.Reader, max int) []DKIMResult {
	var tags []sigTags
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, "DKIM-Signature") {
			tags = append(tags, parseSigTags(f.Value()))
		}
	}
	if len(tags) == 0 {
		return []DKIMResult{}
	}
	keys := &keyRecords{m: map[string][]string{}}
	lookup := func(name string) ([]string, error) {
		txt, err := res.LookupTXT(ctx, name)
		if err == nil {
			keys.put(name, txt)
		}
		return txt, err // a bare *net.DNSError, as the library needs
	}
	vs, verr := dkim.VerifyWithOptions(msg, &dkim.VerifyOptions{LookupTXT: lookup, MaxVerifications: max})

	out := make([]DKIMResult, len(tags))
	for i, t := range tags {
		r := DKIMResult{Domain: t.d, Selector: t.s, Algorithm: t.a, B: shortB(t.b), Identifier: t.i}
		switch {
		case i < len(vs):
			v := vs[i]
			switch {
			case v.Err == nil:
				r.Result = DKIMPass
			case dkim.IsTempFail(v.Err):
				r.Result, r.Error = DKIMTempError, v.Err.Error()
			case dkim.IsPermFail(v.Err):
				r.Result, r.Error = DKIMPermError, v.Err.Error()
			default:
				r.Result, r.Error = DKIMFail, v.Err.Error()
			}
			if r.Domain == "" {
				r.Domain = strings.ToLower(v.Domain)
			}
			if t.s != "" && t.d != "" {
				r.KeyBits = keys.bits(t.s + "._domainkey." + t.d)
			}
		case verr != nil && verr != dkim.ErrTooManySignatures:
			r.Result, r.Error = DKIMTempError, fmt.Sprintf("reading message: %v", verr)
		default:
			r.Result, r.Error = DKIMNeutral, fmt.Sprintf("not checked: more than %d signatures", max)
		}
		out[i] = r
	}
	return out
}

// keyRecords remembers the key records fetched, to report key sizes. The
// library looks keys up concurrently, one goroutine per signature.
type keyRecords struct {
	mu sync.Mutex
	m  map[string][]string
}

func (k *keyRecords) put(name string, txt []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[strings.ToLower(strings.TrimSuffix(name, "."))] = txt
}

func (k *keyRecords) bits(name string) int {
	k.mu.Lock()
	txts := k.m[strings.ToLower(name)]
	k.mu.Unlock()
	for _, txt := range txts {
		if n := KeyBits(txt); n > 0 {
			return n
		}
	}
	return 0
}

// KeyBits returns the size of the public key in a DKIM key record
// (RFC 6376 3.6.1): the RSA modulus length, or 256 for Ed25519 (RFC 8463);
// 0 if it cannot tell.
func KeyBits(record string) int {
	var k, p string
	for _, part := range strings.Split(record, ";") {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(name) {
		case "k":
			k = strings.ToLower(strings.TrimSpace(val))
		case "p":
			p = strings.Join(strings.Fields(val), "")
		}
	}
	if p == "" {
		return 0
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return 0
	}
	if k == "ed25519" {
		if len(der) == 32 {
			return 256
		}
		return 0
	}
	if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
		if rk, ok := pub.(*rsa.PublicKey); ok {
			return rk.N.BitLen()
		}
		return 0
	}
	if rk, err := x509.ParsePKCS1PublicKey(der); err == nil {
		return rk.N.BitLen()
	}
	return 0
}
