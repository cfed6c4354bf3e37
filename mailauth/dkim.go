package mailauth

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"strings"
)

// DKIMStatus is a DKIM result word (RFC 8601 2.7.1).
type DKIMStatus string

// The DKIM results.
const (
	DKIMNone      DKIMStatus = "none"
	DKIMPass      DKIMStatus = "pass"
	DKIMFail      DKIMStatus = "fail"
	DKIMNeutral   DKIMStatus = "neutral"
	DKIMTempError DKIMStatus = "temperror"
	DKIMPermError DKIMStatus = "permerror"
)

// DKIMResult is the outcome for one DKIM-Signature field.
type DKIMResult struct {
	Result    DKIMStatus `json:"result"`
	Domain    string     `json:"domain"`    // d=, lower-cased
	Selector  string     `json:"selector"`  // s=
	Algorithm string     `json:"algorithm"` // a=
	B         string     `json:"b"`         // first 8 characters of b=, for header.b
	KeyBits   int        `json:"key_bits"`  // 0 when the key was not found
	Error     string     `json:"error"`     // why it is not pass

	Identifier string `json:"-"` // i=
	// notChecked: past the cap of signatures verified.
	notChecked bool
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
