package mailauth

import (
	"crypto/rsa"
	"crypto/x509"
	"sync"
)

// keyCache keeps what DKIM key records parse into: the records by their
// text, and the RSA public keys by their p= value (the resolver caches
// the record, and parsing its DER on every message was a tenth of a
// message's CPU). A forger who publishes many keys only fills the
// caches, which start over when full.
type keyCache struct {
	mu   sync.Mutex
	keys map[string]*rsa.PublicKey
	// records are the key records parsed, by their text: the tag list,
	// its base64 and the checks were parsed again on every message.
	records     map[string]*keyEntry
	recordBytes int
}

// Bounds of the parsed records kept: their text in all, and one record
// (a longer one is parsed each time).
const (
	maxRecordBytes = 4 << 20
	maxRecordLen   = 8 << 10
)

// record returns txt parsed as a key record, from the cache or parsed.
// A sender publishing endless records only fills the cache, which
// starts over at its bound. c may be nil: no cache.
func (c *keyCache) record(txt string) *keyEntry {
	if c == nil {
		return parseKeyRecord(txt, nil)
	}
	c.mu.Lock()
	r, ok := c.records[txt]
	c.mu.Unlock()
	if ok {
		return r
	}
	r = parseKeyRecord(txt, c)
	if len(txt) > maxRecordLen {
		return r
	}
	c.mu.Lock()
	if c.records == nil || c.recordBytes+len(txt) > maxRecordBytes {
		c.records, c.recordBytes = make(map[string]*keyEntry), 0
	}
	if _, dup := c.records[txt]; !dup {
		c.records[txt] = r
		c.recordBytes += len(txt)
	}
	c.mu.Unlock()
	return r
}

// maxRSAKeys bounds the cache (a 2048-bit key takes about 600 bytes).
const maxRSAKeys = 4096

// parse returns the key of der: from the cache, or parsed (PKIX, or a
// bare PKCS#1 key as some publish). c may be nil: no cache.
func (c *keyCache) parse(der []byte) (*rsa.PublicKey, error) {
	if c != nil {
		c.mu.Lock()
		k, ok := c.keys[string(der)]
		c.mu.Unlock()
		if ok {
			return k, nil
		}
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		rk, err2 := x509.ParsePKCS1PublicKey(der)
		if err2 != nil {
			return nil, err
		}
		pub = rk
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, errNotRSA
	}
	if c != nil {
		c.mu.Lock()
		if len(c.keys) >= maxRSAKeys || c.keys == nil {
			c.keys = make(map[string]*rsa.PublicKey)
		}
		c.keys[string(der)] = rk
		c.mu.Unlock()
	}
	return rk, nil
}
