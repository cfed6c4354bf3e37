// Package arc verifies and seals Authenticated Received Chains (RFC
// 8617): the ARC-Seal, ARC-Message-Signature and
// ARC-Authentication-Results sets that forwarders and mailing lists add,
// so that the authentication results of an earlier hop survive a
// modification that breaks DKIM. It signs and verifies with the DKIM
// primitives of package mailauth (the same canonicalization, keys and
// body hashes), and the engine is handed it as its ARCVerifier.
package arc

import (
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/wehr/wehr/mailauth"
)

// MaxInstances is the largest instance number a chain may have (RFC
// 8617 4.2.1).
const MaxInstances = 50

// Header field names.
const (
	SealName = "ARC-Seal"
	AMSName  = "ARC-Message-Signature"
	AARName  = "ARC-Authentication-Results"
)

// set is one ARC set: the indexes of its three fields in the header.
type set struct {
	as, ams, aar int
}

// Verifier is the engine's ARC verifier.
type Verifier struct{}

// VerifyARC implements mailauth.ARCVerifier.
func (Verifier) VerifyARC(ctx context.Context, res mailauth.Resolver, h mailauth.Header, body io.Reader) mailauth.ARCResult {
	return Verify(ctx, res, h, body)
}

// instanceOf reads the i= of an ARC field: the tag in AS and AMS, the
// first element of an AAR ("i=1; authserv-id; ...").
func instanceOf(name string, f mailauth.Field) (int, error) {
	v := f.Value()
	if strings.EqualFold(name, AARName) {
		first, _, _ := strings.Cut(v, ";")
		k, val, ok := strings.Cut(first, "=")
		if !ok || strings.TrimSpace(k) != "i" {
			return 0, fmt.Errorf("%s without i= first", AARName)
		}
		return parseInstance(strings.TrimSpace(val))
	}
	tags, err := parseTags(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %v", name, err)
	}
	i, ok := tags["i"]
	if !ok {
		return 0, fmt.Errorf("%s without i=", name)
	}
	return parseInstance(i)
}

// parseTags reads an ARC-Seal's or AMS's tag list, strictly (RFC 6376
// 3.2): tag names are ALPHA *(ALPHA / DIGIT / "_"), and no element is
// empty but an optional last one.
func parseTags(v string) (map[string]string, error) {
	parts := strings.Split(v, ";")
	for i, p := range parts {
		name, _, ok := strings.Cut(p, "=")
		name = strings.TrimSpace(name)
		if !ok {
			if strings.TrimSpace(p) == "" && i == len(parts)-1 {
				continue
			}
			return nil, fmt.Errorf("malformed tag list: %q", strings.TrimSpace(p))
		}
		if name == "" || !isAlpha(name[0]) {
			return nil, fmt.Errorf("malformed tag name %q", name)
		}
		for j := 1; j < len(name); j++ {
			if c := name[j]; !isAlpha(c) && (c < '0' || c > '9') && c != '_' {
				return nil, fmt.Errorf("malformed tag name %q", name)
			}
		}
	}
	return mailauth.ParseTags(v)
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func parseInstance(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxInstances || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("instance %q is not 1 to %d", s, MaxInstances)
	}
	return n, nil
}

// collect finds the ARC sets of h, instance 1 first (RFC 8617 5.2 steps
// 1 and 2): each instance from 1 to N with exactly one field of each
// kind.
func collect(h mailauth.Header) ([]set, error) {
	byInst := map[int]*set{}
	n := 0
	for idx, f := range h.Fields {
		var kind string
		switch {
		case strings.EqualFold(f.Name, SealName):
			kind = "as"
		case strings.EqualFold(f.Name, AMSName):
			kind = "ams"
		case strings.EqualFold(f.Name, AARName):
			kind = "aar"
		default:
			continue
		}
		i, err := instanceOf(f.Name, f)
		if err != nil {
			return nil, err
		}
		s := byInst[i]
		if s == nil {
			s = &set{as: -1, ams: -1, aar: -1}
			byInst[i] = s
		}
		p := map[string]*int{"as": &s.as, "ams": &s.ams, "aar": &s.aar}[kind]
		if *p >= 0 {
			return nil, fmt.Errorf("instance %d has two %s fields", i, f.Name)
		}
		*p = idx
		n = max(n, i)
	}
	if n == 0 {
		return nil, nil
	}
	out := make([]set, n)
	for i := 1; i <= n; i++ {
		s := byInst[i]
		if s == nil {
			return nil, fmt.Errorf("instance %d is missing (the chain goes to %d)", i, n)
		}
		if s.as < 0 || s.ams < 0 || s.aar < 0 {
			return nil, fmt.Errorf("instance %d lacks an %s, %s or %s field", i, SealName, AMSName, AARName)
		}
		out[i-1] = *s
	}
	return out, nil
}

// Verify validates the ARC chain of a message (RFC 8617 5.2): h is its
// header, body reads its body (after the header).
func Verify(ctx context.Context, res mailauth.Resolver, h mailauth.Header, body io.Reader) mailauth.ARCResult {
	out := mailauth.ARCResult{Result: mailauth.ARCNone, Sealers: []string{}}
	fail := func(format string, a ...any) mailauth.ARCResult {
		out.Result, out.Error = mailauth.ARCFail, fmt.Sprintf(format, a...)
		return out
	}
	sets, err := collect(h)
	if err != nil {
		return fail("%v", err)
	}
	if len(sets) == 0 {
		return out
	}
	out.Instances = len(sets)
	seals := make([]map[string]string, len(sets))
	for i, s := range sets {
		tags, err := parseTags(h.Fields[s.as].Value())
		if err != nil {
			return fail("%s i=%d: %v", SealName, i+1, err)
		}
		seals[i] = tags
		out.Sealers = append(out.Sealers, strings.ToLower(tags["d"]))
		out.AAR = append(out.AAR, h.Fields[s.aar].Value())
	}
	n := len(sets)
	// Step 3: the newest seal already says the chain failed.
	if cv := strings.ToLower(seals[n-1]["cv"]); cv == "fail" {
		return fail("the newest %s says cv=fail", SealName)
	}
	// Step 4: cv=none on instance 1 only, pass on every other.
	for i, t := range seals {
		want := "pass"
		if i == 0 {
			want = "none"
		}
		if cv := strings.ToLower(t["cv"]); cv != want {
			return fail("%s i=%d has cv=%s, want %s", SealName, i+1, cv, want)
		}
	}
	// Step 5: the newest AMS; step 6: how far back they verify.
	amss := make([]map[string]string, n)
	bodies := mailauth.NewBodyHashes()
	for i, s := range sets {
		t, err := parseAMS(h.Fields[s.ams].Value())
		if err != nil {
			if i == n-1 {
				return fail("%s i=%d: %v", AMSName, i+1, err)
			}
			continue
		}
		amss[i] = t
		bodies.Add(t["_bcanon"], crypto.SHA256)
	}
	if err := bodies.Read(ctx, body); err != nil {
		return fail("reading the body: %v", err)
	}
	verifyAMS := func(i int) error {
		if amss[i] == nil {
			return errors.New("malformed")
		}
		return checkAMS(ctx, res, h, sets[i].ams, amss[i], bodies)
	}
	if err := verifyAMS(n - 1); err != nil {
		return fail("%s i=%d: %v", AMSName, n, err)
	}
	out.OldestPass = 0
	for i := n - 2; i >= 0; i-- {
		if verifyAMS(i) != nil {
			out.OldestPass = i + 2
			break
		}
	}
	// Step 7: every seal, newest first.
	for i := n - 1; i >= 0; i-- {
		if err := checkSeal(ctx, res, h, sets[:i+1], seals[i]); err != nil {
			return fail("%s i=%d: %v", SealName, i+1, err)
		}
	}
	out.Result = mailauth.ARCPass
	return out
}

// parseAMS reads an ARC-Message-Signature's tags (RFC 8617 4.1.2: a
// DKIM-Signature without v=, with i=), with the body
// canonicalization as "_bcanon" and the header's as "_hcanon".
func parseAMS(v string) (map[string]string, error) {
	t, err := parseTags(v)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"a", "b", "bh", "d", "s"} {
		if t[k] == "" {
			return nil, fmt.Errorf("no %s= tag", k)
		}
	}
	if _, ok := t["h"]; !ok {
		return nil, errors.New("no h= tag")
	}
	hc, bc := "simple", "simple"
	if c, ok := t["c"]; ok {
		hc, bc, _ = strings.Cut(strings.ToLower(c), "/")
		if bc == "" {
			bc = "simple"
		}
		if (hc != "simple" && hc != "relaxed") || (bc != "simple" && bc != "relaxed") {
			return nil, fmt.Errorf("c=%s", c)
		}
	}
	if _, ok := t["l"]; ok {
		return nil, errors.New("l= is not allowed in ARC")
	}
	for _, name := range strings.Split(t["h"], ":") {
		if strings.EqualFold(strings.TrimSpace(name), SealName) {
			return nil, fmt.Errorf("h= signs the %s", SealName)
		}
	}
	t["_hcanon"], t["_bcanon"] = hc, bc
	return t, nil
}

func decodeB64(s string) ([]byte, error) {
	return base64.StdEncoding.DecodeString(mailauth.NoWSP(s))
}

// checkAMS verifies the AMS at field index idx (RFC 8617 5.2 step 5):
// as DKIM does, the fields of h= bottom up, then the AMS itself without
// b=.
func checkAMS(ctx context.Context, res mailauth.Resolver, h mailauth.Header, idx int, t map[string]string, bodies *mailauth.BodyHashes) error {
	_, hash, err := mailauth.Algorithm(t["a"])
	if err != nil {
		return err
	}
	bh, err := decodeB64(t["bh"])
	if err != nil {
		return errors.New("malformed bh=")
	}
	if string(bodies.Sum(t["_bcanon"], hash)) != string(bh) {
		return errors.New("body hash did not verify")
	}
	sig, err := decodeB64(t["b"])
	if err != nil {
		return errors.New("malformed b=")
	}
	digest := mailauth.SignedHeaderHash(h, strings.Split(t["h"], ":"), t["_hcanon"], h.Fields[idx], hash)
	return mailauth.VerifySignature(ctx, res, t["d"], t["s"], t["a"], digest, sig)
}

// checkSeal verifies the seal of the last set in sets (RFC 8617 5.1.1,
// 5.2 step 7): relaxed canonicalization of every set's AAR, AMS and AS
// in instance order, the sealed AS without b= and its CRLF.
func checkSeal(ctx context.Context, res mailauth.Resolver, h mailauth.Header, sets []set, t map[string]string) error {
	for _, k := range []string{"a", "b", "cv", "d", "i", "s"} {
		if t[k] == "" {
			return fmt.Errorf("no %s= tag", k)
		}
	}
	if _, ok := t["h"]; ok {
		return errors.New("an ARC-Seal has no h= tag")
	}
	_, hash, err := mailauth.Algorithm(t["a"])
	if err != nil {
		return err
	}
	sig, err := decodeB64(t["b"])
	if err != nil {
		return errors.New("malformed b=")
	}
	hh := hash.New()
	io.WriteString(hh, sealInput(h, sets))
	return mailauth.VerifySignature(ctx, res, t["d"], t["s"], t["a"], hh.Sum(nil), sig)
}

// sealInput is what the seal of the last of sets signs.
func sealInput(h mailauth.Header, sets []set) string {
	var b strings.Builder
	for j, s := range sets {
		b.WriteString(mailauth.CanonHeader(h.Fields[s.aar], "relaxed"))
		b.WriteString(mailauth.CanonHeader(h.Fields[s.ams], "relaxed"))
		as := h.Fields[s.as]
		if j == len(sets)-1 {
			as.Raw = mailauth.WithoutB(as.Raw)
			b.WriteString(strings.TrimSuffix(mailauth.CanonHeader(as, "relaxed"), "\r\n"))
		} else {
			b.WriteString(mailauth.CanonHeader(as, "relaxed"))
		}
	}
	return b.String()
}
