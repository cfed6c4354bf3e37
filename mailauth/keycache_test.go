package mailauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestRSAKeyCache(t *testing.T) {
	var c keyCache
	der := func() []byte {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return b
	}
	a, b := der(), der()
	ka, err := c.parse(a)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.parse(a); again != ka {
		t.Error("second parse of one record not from the cache")
	}
	// A rotated key (another p=) is another key, never the cached one.
	if kb, _ := c.parse(b); kb == nil || kb.Equal(ka) {
		t.Error("another record gave the cached key")
	}
	// Not RSA, or garbage: errors, and nothing cached.
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKIXPublicKey(edPriv.Public())
	if _, err := c.parse(edDER); !errors.Is(err, errNotRSA) {
		t.Errorf("ed25519 in an RSA record: %v", err)
	}
	if _, err := c.parse([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
	if len(c.keys) != 2 {
		t.Errorf("%d keys cached, want 2", len(c.keys))
	}
	// Hostile: a sender publishing endless keys only fills the cache,
	// which starts over at its bound.
	for i := range maxRSAKeys + 10 {
		c.mu.Lock()
		if c.keys == nil || len(c.keys) >= maxRSAKeys {
			c.keys = map[string]*rsa.PublicKey{}
		}
		c.keys[string(rune(i))+"x"] = ka
		c.mu.Unlock()
	}
	c.parse(a) //nolint:errcheck
	if len(c.keys) > maxRSAKeys {
		t.Errorf("cache grew to %d", len(c.keys))
	}
}

// Key records are parsed once: the same text gives the same key; the
// checks still come in the RFC's order for each signature (a cached
// record never hides a key type mismatch); a hostile sender's endless
// or huge records only fill the cache to its bound.
func TestKeyRecordCache(t *testing.T) {
	var c keyCache
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	txt := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	rsaSig, edSig := &dkimSig{keyType: "rsa", algo: "rsa-sha256"}, &dkimSig{keyType: "ed25519", algo: "ed25519-sha256"}
	k1, err1 := parseDKIMKey(txt, rsaSig, &c)
	k2, err2 := parseDKIMKey(txt, rsaSig, &c)
	if err1 != nil || err2 != nil || k1 != k2 {
		t.Fatalf("%v %v: second parse not from the cache", err1, err2)
	}
	for range 2 {
		if _, err := parseDKIMKey(txt, edSig, &c); err == nil || !strings.Contains(err.Error(), "does not match a=ed25519-sha256") {
			t.Fatalf("an rsa record for an ed25519 signature: %v", err)
		}
		if _, err := parseDKIMKey("v=DKIM1; k=ed25519; p=", edSig, &c); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked: %v", err)
		}
		if _, err := parseDKIMKey("v=DKIM2; k=ed25519; p=", edSig, &c); err == nil || !strings.Contains(err.Error(), "version") {
			t.Fatalf("version: %v", err)
		}
	}
	big := "v=DKIM1; n=" + strings.Repeat("x", maxRecordLen) + "; p="
	parseDKIMKey(big, rsaSig, &c) //nolint:errcheck
	if _, ok := c.records[big]; ok {
		t.Error("an overlong record was cached")
	}
	for i := range 2 * maxRecordBytes / 4000 {
		parseDKIMKey(fmt.Sprintf("v=DKIM1; n=%d%s; p=", i, strings.Repeat("y", 4000)), rsaSig, &c) //nolint:errcheck
		if c.recordBytes > maxRecordBytes {
			t.Fatalf("%d bytes of records cached, past %d", c.recordBytes, maxRecordBytes)
		}
	}
}
