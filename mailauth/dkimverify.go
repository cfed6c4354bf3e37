package mailauth

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	_ "crypto/sha256" // registers crypto.SHA256
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wehr/wehr/dnsname"
)

// The DKIM verifier (RFC 6376 6.1). It works on the header as
// ReadHeader parsed it, so that the fields it verifies are the fields the
// rest of the engine reads (no second parser to disagree on a name like
// "\vDKIM-Signature"), one signature at a time, in linear time, and it
// stops when ctx ends.

// dkimSig is a parsed DKIM-Signature field.
type dkimSig struct {
	field   int    // index in Header.Fields
	algo    string // a=
	keyType string // rsa or ed25519
	hash    crypto.Hash
	b, bh   []byte
	domain  string // d=, lower case
	sel     string // s=
	headers []string
	hcanon  string // simple or relaxed
	bcanon  string
	ident   string // i=
	length  int64  // l=, -1 if absent
	expires int64  // x=, 0 if absent
	rawB    string // b= as written, whitespace removed
}

// dkimError is a verification outcome other than pass.
type dkimError struct {
	result DKIMStatus // DKIMFail, DKIMPermError, DKIMTempError, DKIMNeutral
	msg    string
}

func (e *dkimError) Error() string { return e.msg }

func permErr(format string, a ...any) *dkimError {
	return &dkimError{DKIMPermError, fmt.Sprintf(format, a...)}
}

// parseTagList parses a tag=value list (RFC 6376 3.2) into tags (whose
// room a caller may give on its stack): tags are case-sensitive, white
// space around them and in values is folding white space; a duplicate
// tag makes the list invalid, and so do more than maxTags tags (a
// signature or key record has about ten; more can only be a sender's
// attempt to make the duplicate check cost).
func parseTagList(v string, tags tagList) (tagList, error) {
	for rest, more := v, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ";")
		if strings.TrimSpace(part) == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("tag %q has no value", truncate(strings.TrimSpace(part), 80))
		}
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, errors.New("empty tag name")
		}
		if _, dup := tags.get(name); dup {
			return nil, fmt.Errorf("tag %s twice", truncate(name, 80))
		}
		if len(tags) == maxTags {
			return nil, fmt.Errorf("more than %d tags", maxTags)
		}
		tags = append(tags, tag{name, strings.TrimSpace(val)})
	}
	return tags, nil
}

const maxTags = 64

// tagList is a parsed tag=value list, in the order written.
type tagList []tag

type tag struct{ name, value string }

// get returns the value of the tag name and whether it is present.
func (l tagList) get(name string) (string, bool) {
	for _, t := range l {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

// val returns the value of the tag name, "" if absent.
func (l tagList) val(name string) string {
	v, _ := l.get(name)
	return v
}

// noWSP removes folding white space from a value (base64 tags), copying
// the runs between spaces: the spaces are ASCII (strings.Map decoded
// each rune, 1.5 % of the milter's CPU).
func noWSP(s string) string {
	i := indexWSP(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) - 1)
	for i >= 0 {
		b.WriteString(s[:i])
		s = s[i+1:]
		i = indexWSP(s)
	}
	b.WriteString(s)
	return b.String()
}

// indexWSP is the index of the first space, tab, CR or LF in s, or -1.
func indexWSP(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			return i
		}
	}
	return -1
}

// parseDKIMSig parses and checks a DKIM-Signature value (RFC 6376 3.5,
// 6.1.1). The sig is returned, as far as it was read, even with an error,
// for the report.
func parseDKIMSig(v string, now time.Time) (*dkimSig, error) {
	s := &dkimSig{length: -1}
	var room [16]tag
	tags, err := parseTagList(v, room[:0])
	if err != nil {
		return s, permErr("malformed signature: %v", err)
	}
	// Values were trimmed; d=, s=, a= and i= hold no white space
	// inside (RFC 6376 3.5), b= and bh= may be folded anywhere.
	s.domain = strings.ToLower(tags.val("d"))
	s.sel = tags.val("s")
	s.algo = strings.ToLower(tags.val("a"))
	s.rawB = noWSP(tags.val("b"))
	s.ident = tags.val("i")
	for _, t := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags.get(t); !ok {
			return s, permErr("signature missing required tag %s=", t)
		}
	}
	if tags.val("v") != "1" {
		return s, permErr("unsupported signature version %q", tags.val("v"))
	}
	switch s.algo {
	case "rsa-sha256":
		s.keyType, s.hash = "rsa", crypto.SHA256
	case "ed25519-sha256":
		s.keyType, s.hash = "ed25519", crypto.SHA256
	case "rsa-sha1":
		// RFC 8301 3.1: verifiers must not consider rsa-sha1 valid.
		return s, permErr("rsa-sha1 signatures are not accepted (RFC 8301)")
	default:
		return s, permErr("unknown signature algorithm %q", s.algo)
	}
	if s.b, err = base64.StdEncoding.DecodeString(s.rawB); err != nil || len(s.b) == 0 {
		return s, permErr("malformed b= tag")
	}
	if s.bh, err = base64.StdEncoding.DecodeString(noWSP(tags.val("bh"))); err != nil || len(s.bh) != s.hash.Size() {
		return s, permErr("malformed bh= tag")
	}
	if !validDomainName(s.domain) {
		return s, permErr("malformed d= tag %q", truncate(s.domain, 80))
	}
	if !validSelector(s.sel) {
		return s, permErr("malformed s= tag %q", truncate(s.sel, 80))
	}
	h := tags.val("h")
	s.headers = make([]string, 0, strings.Count(h, ":")+1)
	for rest, more := h, true; more; {
		var name string
		name, rest, more = strings.Cut(rest, ":")
		name = strings.TrimSpace(name)
		if !ValidFieldName(name) {
			return s, permErr("malformed h= tag")
		}
		s.headers = append(s.headers, name)
	}
	// RFC 6376 5.4: the From field must be signed.
	if !containsFold(s.headers, "From") {
		return s, permErr("From field not signed")
	}
	s.hcanon, s.bcanon = "simple", "simple"
	if c, ok := tags.get("c"); ok {
		hc, bc, two := strings.Cut(noWSP(c), "/")
		s.hcanon = hc
		if two {
			s.bcanon = bc
		}
		for _, x := range []string{s.hcanon, s.bcanon} {
			if x != "simple" && x != "relaxed" {
				return s, permErr("unknown canonicalization %q", c)
			}
		}
	}
	if q, ok := tags.get("q"); ok && !strings.Contains(noWSP(q), "dns/txt") {
		return s, permErr("unsupported query method %q", q)
	}
	// RFC 6376 3.5 i=: in d= or a subdomain of it.
	if s.ident != "" {
		_, id, ok := cutAt(s.ident)
		id = strings.ToLower(id)
		if !ok || (id != s.domain && !strings.HasSuffix(id, "."+s.domain)) {
			return s, permErr("i= domain not within d=%s", s.domain)
		}
	}
	if l, ok := tags.get("l"); ok {
		n, err := strconv.ParseInt(noWSP(l), 10, 64)
		if err != nil || n < 0 {
			return s, permErr("malformed l= tag")
		}
		s.length = n
	}
	var signed int64
	if t, ok := tags.get("t"); ok {
		if signed, err = strconv.ParseInt(noWSP(t), 10, 64); err != nil {
			return s, permErr("malformed t= tag")
		}
	}
	if x, ok := tags.get("x"); ok {
		if s.expires, err = strconv.ParseInt(noWSP(x), 10, 64); err != nil {
			return s, permErr("malformed x= tag")
		}
		if _, ok := tags.get("t"); ok && s.expires < signed {
			return s, permErr("x= before t=")
		}
		// RFC 6376 6.1.1: an expired signature is invalid.
		if now.Unix() > s.expires {
			return s, permErr("signature expired")
		}
	}
	return s, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// validDomainName checks a d= value: dot-separated labels of letters,
// digits, hyphens (and underscores, seen in the wild), none empty.
func validDomainName(d string) bool { return dnsname.Valid(d) }

// validSelector checks an s= value (RFC 6376 3.1: sub-domain syntax).
func validSelector(s string) bool {
	return validDomainName(strings.ToLower(s))
}

// dkimKey is a parsed DKIM key record (RFC 6376 3.6.1).
type dkimKey struct {
	rsa    *rsa.PublicKey
	ed     ed25519.PublicKey
	bits   int
	strict bool // t=s: i= must be d= exactly
}

// parseDKIMKey parses a key record for sig.
// parseDKIMKey reads a key record for sig (RFC 6376 3.6.1): from the
// cache of parsed records, or parsed; the checks go in the RFC's order.
func parseDKIMKey(txt string, sig *dkimSig, keys *keyCache) (*dkimKey, error) {
	r := keys.record(txt)
	if r.early != nil {
		return nil, r.early
	}
	if r.keyType != sig.keyType {
		return nil, permErr("key type %s does not match a=%s", r.keyType, sig.algo)
	}
	if r.late != nil {
		return nil, r.late
	}
	return r.key, nil
}

// keyEntry is a DKIM key record parsed without regard to a signature:
// early is an error found before the key type is compared with the
// signature's, late one found after; key is shared, never changed.
type keyEntry struct {
	keyType string
	early   error
	late    error
	key     *dkimKey
}

func parseKeyRecord(txt string, keys *keyCache) (r *keyEntry) {
	r = &keyEntry{keyType: "rsa"}
	var room [16]tag
	tags, err := parseTagList(txt, room[:0])
	if err != nil {
		r.early = permErr("malformed key record: %v", err)
		return r
	}
	if v, ok := tags.get("v"); ok && v != "DKIM1" {
		r.early = permErr("key record version %q", v)
		return r
	}
	if h, ok := tags.get("h"); ok {
		found := false
		for _, a := range strings.Split(h, ":") {
			if strings.TrimSpace(a) == "sha256" {
				found = true
			}
		}
		if !found {
			r.early = permErr("key does not allow sha256 (h=%s)", h)
			return r
		}
	}
	if v, ok := tags.get("k"); ok {
		r.keyType = strings.ToLower(v)
	}
	k := r.keyType
	// The rest is checked after the key type matches the signature's.
	r.key, r.late = keyOf(tags, k, keys)
	return r
}

// keyOf reads the key of a record whose version and hashes passed.
func keyOf(tags tagList, k string, keys *keyCache) (*dkimKey, error) {
	if s, ok := tags.get("s"); ok {
		okS := false
		for _, x := range strings.Split(s, ":") {
			if x = strings.TrimSpace(x); x == "*" || x == "email" {
				okS = true
			}
		}
		if !okS {
			return nil, permErr("key not for email (s=%s)", s)
		}
	}
	key := &dkimKey{}
	if t, ok := tags.get("t"); ok {
		for _, f := range strings.Split(t, ":") {
			if strings.TrimSpace(f) == "s" {
				key.strict = true
			}
		}
	}
	p := noWSP(tags.val("p"))
	if p == "" {
		return nil, permErr("key revoked (empty p=)")
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, permErr("malformed key p=")
	}
	switch k {
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, permErr("malformed ed25519 key")
		}
		key.ed, key.bits = ed25519.PublicKey(der), 256
	default:
		rk, err := keys.parse(der)
		if errors.Is(err, errNotRSA) {
			return nil, permErr("key in p= is not an RSA key")
		}
		if err != nil {
			return nil, permErr("malformed RSA key")
		}
		key.rsa, key.bits = rk, rk.N.BitLen()
		// RFC 8301 3.2: keys under 1024 bits are not valid.
		if key.bits < 1024 {
			return nil, permErr("RSA key of %d bits is too short (RFC 8301)", key.bits)
		}
	}
	return key, nil
}

// lookupKey fetches and parses the key of sig (RFC 6376 6.1.2). A DNS
// name that does not exist, or no usable record, is a permanent error; a
// DNS failure a temporary one.
func lookupKey(ctx context.Context, res Resolver, sig *dkimSig, keys *keyCache) (*dkimKey, []string, error) {
	name := sig.sel + "._domainkey." + sig.domain
	txts, err := res.LookupTXT(ctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil, permErr("no key for signature at %s", name)
		}
		return nil, nil, &dkimError{DKIMTempError, fmt.Sprintf("key lookup %s: %v", name, err)}
	}
	var first error
	for _, t := range txts {
		k, err := parseDKIMKey(t, sig, keys)
		if err == nil {
			return k, txts, nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = permErr("no key record at %s", name)
	}
	return nil, txts, first
}

// canonHeader canonicalizes one header field (RFC 6376 3.4.1, 3.4.2),
// with its trailing CRLF.
func canonHeader(f Field, canon string) string {
	return string(appendCanonHeader(nil, f, canon))
}

// appendCanonHeader appends f canonicalized, with its CRLF. Relaxed
// (RFC 6376 3.4.2): the name in lower case (an ASCII name, as
// ReadHeader checks), the value unfolded, white space runs as one
// space, none at either end.
func appendCanonHeader(dst []byte, f Field, canon string) []byte {
	if canon == "simple" {
		dst = append(append(append(dst, f.Name...), f.Sep...), ':')
		return append(append(dst, f.Raw...), "\r\n"...)
	}
	if allASCII(f.Name) {
		dst = asciiLower(dst, f.Name)
	} else {
		dst = append(dst, strings.ToLower(f.Name)...)
	}
	dst = append(dst, ':')
	v := f.Raw
	started, wsp := false, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\r' && i+1 < len(v) && v[i+1] == '\n':
			i++ // unfolded
		case c == ' ' || c == '\t':
			wsp = started
		default:
			if wsp {
				dst = append(dst, ' ')
				wsp = false
			}
			dst = append(dst, c)
			started = true
		}
	}
	return append(dst, "\r\n"...)
}

func allASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// withoutB returns the raw DKIM-Signature value with the b= tag's value
// removed (RFC 6376 3.7), everything else as it was.
func withoutB(raw string) string {
	var b strings.Builder
	rest := raw
	for {
		part, after, more := strings.Cut(rest, ";")
		name, _, hasEq := strings.Cut(part, "=")
		if hasEq && strings.TrimSpace(name) == "b" {
			b.WriteString(part[:strings.IndexByte(part, '=')+1])
		} else {
			b.WriteString(part)
		}
		if !more {
			return b.String()
		}
		b.WriteByte(';')
		rest = after
	}
}

// headerHash computes the hash the signature signs (RFC 6376 3.7, 5.4.2):
// the fields named by h=, each taken from the bottom up, then the
// signature field itself without b= and without its CRLF.
func headerHash(h Header, sig *dkimSig) []byte {
	return SignedHeaderHash(h, sig.headers, sig.hcanon, h.Fields[sig.field], sig.hash)
}

// SignedHeaderHash is the hash a DKIM-style signature signs (RFC 6376
// 3.7, 5.4.2): the fields named in names, each taken from the bottom up
// (a name listed once more than it occurs signs nothing), then the
// signature field self without its b= value and CRLF, all in
// canonicalization canon. ARC's AMS signs the same way.
func SignedHeaderHash(h Header, names []string, canon string, self Field, hash crypto.Hash) []byte {
	// The fields of each signed name, bottom up. Only the signed names
	// are indexed, and a field's name is lower-cased on the stack for
	// the lookup (field names are ASCII: ReadHeader checks them); the
	// canonical fields go into one buffer, hashed in one write.
	byName := make(map[string]*[]int, len(names))
	for _, name := range names {
		if n := strings.ToLower(strings.TrimSpace(name)); byName[n] == nil {
			byName[n] = new([]int)
		}
	}
	var stack [64]byte
	for i := len(h.Fields) - 1; i >= 0; i-- {
		fn := h.Fields[i].Name
		var at *[]int
		if len(fn) <= len(stack) {
			at = byName[string(asciiLower(stack[:0], fn))]
		} else {
			at = byName[strings.ToLower(fn)]
		}
		if at != nil {
			*at = append(*at, i)
		}
	}
	bp := hashBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	for _, name := range names {
		if at := byName[strings.ToLower(strings.TrimSpace(name))]; len(*at) > 0 {
			buf = appendCanonHeader(buf, h.Fields[(*at)[0]], canon)
			*at = (*at)[1:]
		}
	}
	self.Raw = withoutB(self.Raw)
	buf = appendCanonHeader(buf, self, canon)
	hh := hash.New()
	hh.Write(buf[:len(buf)-2]) // the signature's field without its CRLF
	if cap(buf) <= maxPooledHashBuffer {
		*bp = buf
		hashBuffers.Put(bp)
	}
	return hh.Sum(nil)
}

// hashBuffers hold the canonical signed fields of SignedHeaderHash; one
// grown beyond maxPooledHashBuffer (a sender's huge header) is left to
// the collector.
var hashBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

const maxPooledHashBuffer = 64 << 10

// asciiLower appends s with ASCII letters in lower case.
func asciiLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// bodyCanon canonicalizes a body as it is written (RFC 6376 3.4.3,
// 3.4.4), LF or CRLF line endings alike, into w, up to limit bytes
// (-1: all). It keeps only a line's state: any body costs linear time
// and constant memory.
type bodyCanon struct {
	w       io.Writer
	relaxed bool
	limit   int64
	n       int64 // bytes written
	empty   int   // empty lines held back
	content bool  // the current line has content
	wsp     bool  // relaxed: white space held back
	cr      bool  // a CR held back
	out     []byte
	pooled  *[canonBufSize]byte // out's array, from canonBuffers
}

func (c *bodyCanon) emit(p []byte) {
	c.out = append(c.out, p...)
}

func (c *bodyCanon) startContent() {
	if !c.content {
		for ; c.empty > 0; c.empty-- {
			c.emit([]byte("\r\n"))
		}
		c.content = true
	}
}

func (c *bodyCanon) Write(p []byte) (int, error) {
	if need := len(p) + len(p)/8 + 64; cap(c.out) < need {
		if c.pooled == nil && need <= canonBufSize {
			c.pooled = canonBuffers.Get().(*[canonBufSize]byte)
			c.out = c.pooled[:0]
		} else {
			c.out = make([]byte, 0, need)
		}
	}
	for i := 0; i < len(p); {
		b := p[i]
		if c.cr {
			c.cr = false
			if b != '\n' {
				c.char('\r')
			}
		}
		switch {
		case b == '\r':
			c.cr = true
			i++
		case b == '\n':
			c.wsp = false
			if c.content {
				c.emit([]byte("\r\n"))
				c.content = false
			} else {
				c.empty++
			}
			i++
		case c.relaxed && (b == ' ' || b == '\t'):
			c.wsp = true
			i++
		default:
			// A run of bytes that change nothing in the state: copied
			// as they are (a line's text, most of a body).
			j := i + 1
			for j < len(p) && !c.special(p[j]) {
				j++
			}
			c.startContent()
			if c.wsp {
				c.out = append(c.out, ' ')
				c.wsp = false
			}
			c.out = append(c.out, p[i:j]...)
			i = j
		}
	}
	c.flush()
	return len(p), nil
}

// special says whether b changes the canonicaliser's state.
func (c *bodyCanon) special(b byte) bool {
	return b == '\r' || b == '\n' || c.relaxed && (b == ' ' || b == '\t')
}

// canonBufSize is the size of the pooled output buffers: the body is
// read 8 KiB at a time, and relaxed canonicalisation can only shorten
// it, simple add a CR per line.
const canonBufSize = 20 << 10

var canonBuffers = sync.Pool{New: func() any { return new([canonBufSize]byte) }}

func (c *bodyCanon) char(b byte) {
	if c.relaxed && (b == ' ' || b == '\t') {
		c.wsp = true
		return
	}
	c.startContent()
	if c.wsp {
		c.emit([]byte{' '})
		c.wsp = false
	}
	c.emit([]byte{b})
}

func (c *bodyCanon) flush() {
	out := c.out
	if c.limit >= 0 && c.n+int64(len(out)) > c.limit {
		out = out[:max(c.limit-c.n, 0)]
	}
	if len(out) > 0 {
		c.w.Write(out)
		c.n += int64(len(out))
	}
	c.out = c.out[:0]
}

// close ends the body: simple canonicalization ends a body in CRLF (an
// empty body is one CRLF); relaxed leaves an empty body empty.
func (c *bodyCanon) close() {
	if c.cr {
		c.cr = false
		c.char('\r')
	}
	c.wsp = false
	if c.content {
		c.emit([]byte("\r\n"))
		c.content = false
	}
	if !c.relaxed && c.n == 0 && len(c.out) == 0 {
		c.emit([]byte("\r\n"))
	}
	c.flush()
	if c.pooled != nil {
		canonBuffers.Put(c.pooled)
		c.pooled, c.out = nil, nil
	}
}

var errNotRSA = errors.New("not an RSA key")

// readBuffers are the body hasher's read buffers.
var readBuffers = sync.Pool{New: func() any { return new([8 << 10]byte) }}

// bodyHasher hashes the body once for every (canonicalization, hash,
// length) the signatures ask for.
type bodyHasher struct {
	hashes map[bodyKey]*bodyHash
	canons []*bodyCanon
}

type bodyKey struct {
	relaxed bool
	hash    crypto.Hash
	length  int64
}

type bodyHash struct {
	h     hash.Hash
	canon *bodyCanon
}

func (bh *bodyHasher) add(s *dkimSig) {
	k := bodyKey{s.bcanon == "relaxed", s.hash, s.length}
	if _, ok := bh.hashes[k]; ok {
		return
	}
	h := k.hash.New()
	c := &bodyCanon{w: h, relaxed: k.relaxed, limit: k.length}
	bh.hashes[k] = &bodyHash{h: h, canon: c}
	bh.canons = append(bh.canons, c)
}

// read hashes the body from r, checking ctx between chunks.
func (bh *bodyHasher) read(ctx context.Context, r io.Reader) error {
	bp := readBuffers.Get().(*[8 << 10]byte)
	defer readBuffers.Put(bp)
	buf := bp[:]
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		for _, c := range bh.canons {
			c.Write(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	for _, c := range bh.canons {
		c.close()
	}
	return nil
}

func (bh *bodyHasher) sum(s *dkimSig) (sum []byte, tooShort bool) {
	b := bh.hashes[bodyKey{s.bcanon == "relaxed", s.hash, s.length}]
	return b.h.Sum(nil), s.length >= 0 && b.canon.n < s.length
}

// verifyDKIM checks up to max DKIM signatures of the message (RFC 6376
// 6.1), the header as h holds it and the body read from msg after it;
// the rest are reported neutral, not checked. Key lookups go through res,
// at once for every signature; everything stops when ctx ends.
func verifyDKIM(ctx context.Context, res Resolver, cache *keyCache, h Header, msg io.Reader, max int) []DKIMResult {
	now := time.Now()
	out := []DKIMResult{}
	var sigs []*dkimSig
	var errs []error
	for i, f := range h.Fields {
		if !strings.EqualFold(f.Name, "DKIM-Signature") {
			continue
		}
		if len(out) >= max {
			t := parseSigTags(f.Value())
			out = append(out, DKIMResult{Result: DKIMNeutral, Domain: t.d, Selector: t.s, Algorithm: t.a, B: shortB(t.b), Identifier: t.i,
				Error: fmt.Sprintf("not checked: more than %d signatures", max), notChecked: true})
			continue
		}
		s, err := parseDKIMSig(f.Value(), now)
		s.field = i
		out = append(out, DKIMResult{Domain: s.domain, Selector: s.sel, Algorithm: s.algo, B: shortB(s.rawB), Identifier: s.ident})
		sigs = append(sigs, s)
		errs = append(errs, err)
	}
	if len(sigs) == 0 {
		return out
	}

	// Keys, all at once, while the body is hashed.
	keys := make([]*dkimKey, len(sigs))
	var wg sync.WaitGroup
	bh := &bodyHasher{hashes: map[bodyKey]*bodyHash{}}
	lookup := func(i int, s *dkimSig) {
		k, txts, err := lookupKey(ctx, res, s, cache)
		keys[i], errs[i] = k, err
		if k != nil {
			out[i].KeyBits = k.bits
			return
		}
		// The key was refused (too short, say): its size still says why.
		for _, t := range txts {
			if n := KeyBits(t); n > 0 {
				out[i].KeyBits = n
				break
			}
		}
	}
	for i, s := range sigs {
		if errs[i] != nil {
			continue
		}
		bh.add(s)
		if len(sigs) == 1 {
			// One key: a goroutine costs more than it saves (the key
			// is usually cached, the body short).
			lookup(i, s)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			lookup(i, s)
		}()
	}
	br := getReader(msg)
	var bodyErr error
	if _, err := br.Discard(h.Size); err != nil && !errors.Is(err, io.EOF) {
		bodyErr = err
	} else {
		bodyErr = bh.read(ctx, br)
	}
	putReader(br)
	wg.Wait()

	for i, s := range sigs {
		err := errs[i]
		if err == nil && bodyErr != nil {
			err = &dkimError{DKIMTempError, fmt.Sprintf("reading message: %v", bodyErr)}
		}
		if err == nil {
			err = checkSig(h, s, keys[i], bh)
		}
		var de *dkimError
		switch {
		case err == nil:
			out[i].Result = DKIMPass
		case errors.As(err, &de):
			out[i].Result, out[i].Error = de.result, de.msg
		default:
			out[i].Result, out[i].Error = DKIMTempError, err.Error()
		}
	}
	return out
}

// checkSig verifies one signature whose key was found (RFC 6376 6.1.3).
func checkSig(h Header, s *dkimSig, k *dkimKey, bh *bodyHasher) error {
	if k.strict && s.ident != "" {
		if _, id, _ := cutAt(s.ident); !strings.EqualFold(id, s.domain) {
			return permErr("key t=s: i= must be in d=%s itself", s.domain)
		}
	}
	sum, short := bh.sum(s)
	if short {
		return &dkimError{DKIMFail, "body shorter than l="}
	}
	if !bytesEqual(sum, s.bh) {
		return &dkimError{DKIMFail, "body hash did not verify"}
	}
	hashed := headerHash(h, s)
	var ok bool
	switch {
	case k.ed != nil:
		ok = ed25519.Verify(k.ed, hashed, s.b)
	default:
		ok = rsa.VerifyPKCS1v15(k.rsa, s.hash, hashed, s.b) == nil
	}
	if !ok {
		return &dkimError{DKIMFail, "signature did not verify"}
	}
	return nil
}

func bytesEqual(a, b []byte) bool {
	return len(a) == len(b) && string(a) == string(b)
}
