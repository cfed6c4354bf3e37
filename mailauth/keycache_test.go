package mailauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"
)

func TestRSAKeyCache(t *testing.T) {
	var c rsaKeys
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
