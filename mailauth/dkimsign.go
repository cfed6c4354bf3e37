package mailauth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"

	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// DKIMBodyHash returns the relaxed body hash (RFC 6376 3.4.4, 3.7) of
// the body read from r, stopping when ctx ends.
func DKIMBodyHash(ctx context.Context, r io.Reader) ([]byte, error) {
	bh := &bodyHasher{hashes: map[bodyKey]*bodyHash{}}
	s := &dkimSig{bcanon: "relaxed", hash: crypto.SHA256, length: -1}
	bh.add(s)
	if err := bh.read(ctx, r); err != nil {
		return nil, err
	}
	sum, _ := bh.sum(s)
	return sum, nil
}

// SignDKIM makes a DKIM-Signature field value (RFC 6376 3.5), relaxed/
// relaxed, over the fields headerKeys names (bottom up, a name listed
// more often than it occurs signing its absence) and a body whose hash
// is bodyHash. The value starts with a space and is folded with CRLF.
// key is an *rsa.PrivateKey (rsa-sha256) or ed25519.PrivateKey.
func SignDKIM(h Header, domain, selector string, key crypto.Signer, headerKeys []string, bodyHash []byte, now time.Time) (string, error) {
	algo := ""
	switch key.(type) {
	case *rsa.PrivateKey:
		algo = "rsa-sha256"
	case ed25519.PrivateKey:
		algo = "ed25519-sha256"
	default:
		return "", fmt.Errorf("dkim sign: key type %T", key)
	}
	if !containsFold(headerKeys, "From") {
		return "", fmt.Errorf("dkim sign: From must be signed (RFC 6376 5.4)")
	}
	var v strings.Builder
	line := 0
	add := func(tag string) {
		if line > 0 && line+len(tag)+1 > 76 {
			v.WriteString("\r\n\t")
			line = 1
		} else {
			v.WriteByte(' ')
			line++
		}
		v.WriteString(tag)
		line += len(tag)
	}
	add("v=1;")
	add("a=" + algo + ";")
	add("c=relaxed/relaxed;")
	add("d=" + domain + ";")
	add("s=" + selector + ";")
	add("t=" + strconv.FormatInt(now.Unix(), 10) + ";")
	add("h=" + strings.Join(headerKeys, ":") + ";")
	add("bh=" + base64.StdEncoding.EncodeToString(bodyHash) + ";")
	v.WriteString("\r\n\tb=")
	prefix := v.String()

	sig := &dkimSig{hash: crypto.SHA256, headers: headerKeys, hcanon: "relaxed", field: len(h.Fields)}
	withSig := Header{Fields: append(h.Fields[:len(h.Fields):len(h.Fields)], Field{Name: "DKIM-Signature", Raw: prefix})}
	hashed := headerHash(withSig, sig)
	var b []byte
	var err error
	if algo == "ed25519-sha256" {
		b, err = key.Sign(rand.Reader, hashed, crypto.Hash(0))
	} else {
		b, err = key.Sign(rand.Reader, hashed, crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("dkim sign: %w", err)
	}
	enc := base64.StdEncoding.EncodeToString(b)
	for len(enc) > 0 {
		n := min(len(enc), 72)
		v.WriteString(enc[:n])
		enc = enc[n:]
		if len(enc) > 0 {
			v.WriteString("\r\n\t ")
		}
	}
	return v.String(), nil
}
