package mailauth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The DKIM primitives ARC (package arc) signs and verifies with: the
// same canonicalization, tag lists, key records and body hashes as the
// DKIM verifier, so that the two never disagree on a message.

// CanonHeader canonicalizes one header field, "simple" or "relaxed"
// (RFC 6376 3.4.1, 3.4.2), with its trailing CRLF.
func CanonHeader(f Field, canon string) string { return canonHeader(f, canon) }

// WithoutB is a signature field's raw value with the b= tag's value
// removed (RFC 6376 3.7), everything else as it was.
func WithoutB(raw string) string { return withoutB(raw) }

// ParseTags parses a tag=value list (RFC 6376 3.2); a tag given twice
// is an error.
func ParseTags(v string) (map[string]string, error) {
	l, err := parseTagList(v, nil)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(l))
	for _, t := range l {
		m[t.name] = t.value
	}
	return m, nil
}

// NoWSP removes folding white space (base64 values, RFC 6376 3.5).
func NoWSP(s string) string { return noWSP(s) }

// KeyError is a failed verification: Result says whether it is a fail,
// a permerror (bad key, no key) or a temperror (DNS).
type KeyError struct {
	Result DKIMStatus
	Msg    string
}

func (e *KeyError) Error() string { return e.Msg }

// Algorithm reads an a= value: the key type and hash, or a permerror
// (rsa-sha1 is not valid, RFC 8301).
func Algorithm(a string) (keyType string, h crypto.Hash, err error) {
	switch strings.ToLower(a) {
	case "rsa-sha256":
		return "rsa", crypto.SHA256, nil
	case "ed25519-sha256":
		return "ed25519", crypto.SHA256, nil
	case "rsa-sha1":
		return "", 0, &KeyError{DKIMPermError, "rsa-sha1 is not valid (RFC 8301)"}
	}
	return "", 0, &KeyError{DKIMPermError, fmt.Sprintf("unknown algorithm a=%s", a)}
}

// VerifySignature looks up the key of selector s in domain d (RFC 6376
// 6.1.2) and checks sig over digest with it, for algorithm a.
func VerifySignature(ctx context.Context, res Resolver, d, s, a string, digest, sig []byte) error {
	keyType, h, err := Algorithm(a)
	if err != nil {
		return err
	}
	k, _, err := lookupKey(ctx, res, &dkimSig{domain: strings.ToLower(d), sel: s, keyType: keyType, algo: a, hash: h}, nil)
	if err != nil {
		var de *dkimError
		if errors.As(err, &de) {
			return &KeyError{de.result, de.msg}
		}
		return &KeyError{DKIMTempError, err.Error()}
	}
	var ok bool
	if k.ed != nil {
		ok = ed25519.Verify(k.ed, digest, sig)
	} else {
		ok = rsa.VerifyPKCS1v15(k.rsa, h, digest, sig) == nil
	}
	if !ok {
		return &KeyError{DKIMFail, "signature did not verify"}
	}
	return nil
}

// BodyHashes hashes one message body for several (canonicalization,
// hash) pairs at once, as the verifier does.
type BodyHashes struct{ bh *bodyHasher }

// NewBodyHashes is an empty set of body hashes.
func NewBodyHashes() *BodyHashes {
	return &BodyHashes{bh: &bodyHasher{hashes: map[bodyKey]*bodyHash{}}}
}

// Add asks for the body hash with canonicalization canon ("simple" or
// "relaxed") and hash h.
func (b *BodyHashes) Add(canon string, h crypto.Hash) {
	b.bh.add(&dkimSig{bcanon: canon, hash: h, length: -1})
}

// Read hashes the body from r.
func (b *BodyHashes) Read(ctx context.Context, r io.Reader) error { return b.bh.read(ctx, r) }

// Sum is the body hash for canon and h, after Read.
func (b *BodyHashes) Sum(canon string, h crypto.Hash) []byte {
	s, _ := b.bh.sum(&dkimSig{bcanon: canon, hash: h, length: -1})
	return s
}
