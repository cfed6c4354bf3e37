package mailauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"sync"

	"golang.org/x/net/idna"
)

// Field is one header field as received.
type Field struct {
	Name string // as written, e.g. "From"
	// Sep is the white space between the name and the colon, usually
	// none (RFC 5322 4.5.8); DKIM's simple canonicalization keeps it.
	Sep string
	// Raw is everything after the colon, line breaks kept as CRLF.
	Raw string
}

// Value is the unfolded value, trimmed.
func (f Field) Value() string { return unfold(f.Raw) }

// Header is a message's header section, in order.
type Header struct {
	Fields []Field
	// Size is the number of bytes the header section took, blank line
	// included.
	Size int
	// Malformed counts lines that were neither a field nor a
	// continuation (skipped).
	Malformed int
}

// ErrHeaderTooLarge is returned when the header section exceeds the cap.
var ErrHeaderTooLarge = errors.New("message header too large")

// ReadHeader reads the header section of a message with LF or CRLF line
// endings, up to max bytes (0: no limit). It stops after the empty line
// that ends the header, or at EOF (a message without body).
func ReadHeader(r *bufio.Reader, max int) (Header, error) {
	var h Header
	// The section is gathered into one buffer, with CRLF line breaks,
	// and becomes one string the fields are slices of: a header costs
	// two allocations and linear time, however its fields are folded.
	// The gathering buffers are kept for the next header (growing them
	// anew was a tenth of what a message allocated).
	sc := headerScratch.Get().(*headerBufs)
	buf, spans, line := sc.buf[:0], sc.spans[:0], sc.line[:0]
	var err error
	done := func() (Header, error) {
		all := string(buf)
		h.Fields = make([]Field, len(spans))
		for i, sp := range spans {
			h.Fields[i] = Field{Name: all[sp.start : sp.start+sp.name], Sep: all[sp.start+sp.name : sp.start+sp.sep],
				Raw: all[sp.start+sp.sep+1 : sp.end]}
		}
		if cap(buf) <= maxScratch && cap(line) <= maxScratch {
			sc.buf, sc.spans, sc.line = buf, spans, line
			headerScratch.Put(sc)
		}
		return h, err
	}
	for {
		line, err = readLine(r, line[:0], max-h.Size)
		h.Size += len(line)
		if max > 0 && h.Size > max {
			err = fmt.Errorf("%w: more than %d bytes", ErrHeaderTooLarge, max)
			return done()
		}
		if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("read header: %w", err)
			return done()
		}
		eof := errors.Is(err, io.EOF)
		err = nil
		body := line
		for len(body) > 0 && (body[len(body)-1] == '\n' || body[len(body)-1] == '\r') {
			body = body[:len(body)-1]
		}
		if len(body) == 0 {
			return done() // end of header (or of input)
		}
		switch {
		case body[0] == ' ' || body[0] == '\t':
			if len(spans) == 0 || spans[len(spans)-1].end != len(buf) {
				h.Malformed++
			} else {
				buf = append(append(buf, "\r\n"...), body...)
				spans[len(spans)-1].end = len(buf)
			}
		default:
			colon := bytes.IndexByte(body, ':')
			// RFC 5322 2.2: field names are printable ASCII except
			// colon; "From :" (space before the colon) is obsolete
			// syntax (RFC 5322 4.5.8) that mailers still accept.
			name := 0
			if colon >= 0 {
				name = len(bytes.TrimRight(body[:colon], " \t"))
			}
			if colon < 0 || !validFieldName(body[:name]) {
				h.Malformed++
				// A continuation after a malformed line continues
				// nothing.
				buf = append(buf, '\n')
			} else {
				if len(buf) > 0 {
					buf = append(buf, '\n')
				}
				start := len(buf)
				buf = append(buf, body...)
				spans = append(spans, span{name: name, sep: colon, start: start, end: len(buf)})
			}
		}
		if eof {
			return done()
		}
	}
}

// headerBufs are ReadHeader's gathering buffers, reused.
type headerBufs struct {
	buf   []byte
	spans []span
	line  []byte
}

// span is a field in the gathered section: name and separator lengths,
// start and end offsets.
type span struct{ name, sep, start, end int }

var headerScratch = sync.Pool{New: func() any { return &headerBufs{} }}

// maxScratch bounds the buffers kept for reuse.
const maxScratch = 256 << 10

// readLine appends the next line of r to line, ending LF included; at
// most left bytes more than that are read into it when left > 0 (the
// rest of an overlong line is not kept, only counted by the caller's
// cap through the length returned).
func readLine(r *bufio.Reader, line []byte, left int) ([]byte, error) {
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
		if left > 0 && len(line) > left {
			return line, nil
		}
	}
}

// ValidFieldName reports whether s may be a header field name (RFC 5322
// 2.2: printable ASCII except colon).
func ValidFieldName(s string) bool { return validFieldName(s) }

func validFieldName[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}

// Values returns the unfolded values of every field named name.
func (h Header) Values(name string) []string {
	var out []string
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value())
		}
	}
	return out
}

// Get returns the first value of name, or "".
func (h Header) Get(name string) string {
	for _, f := range h.Fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value()
		}
	}
	return ""
}

func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "")
	s = strings.ReplaceAll(s, "\n", "")
	return strings.TrimSpace(s)
}

var addrParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	// Encoded words in display names need no real decoding here: we
	// only want the addresses.
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

// AuthorDomains returns the Author Domains of a message (RFC 9989 5.3.1):
// the distinct domains of the addresses in its From fields, lower-cased
// A-labels. why says what was wrong when there are none.
//
// Every domain that can be read from any From field counts: an address
// without a usable domain (a domain literal, "junk@") or a field that
// is not valid RFC 5322 hides none of the others, since a forger would
// add just such an address to a From naming the domain he spoofs.
func AuthorDomains(h Header) (domains []string, why string) {
	addrs, why := authorAddresses(h)
	seen := map[string]bool{}
	for _, a := range addrs {
		if !seen[a.domain] {
			seen[a.domain] = true
			domains = append(domains, a.domain)
		}
	}
	return domains, why
}

// AuthorAddresses returns the addresses of the message's From fields,
// with lower-case A-label domains, read as AuthorDomains reads them; why
// says what was wrong when there are none.
func AuthorAddresses(h Header) (addrs []string, why string) {
	list, why := authorAddresses(h)
	for _, a := range list {
		addrs = append(addrs, a.local+"@"+a.domain)
	}
	return addrs, why
}

type address struct{ local, domain string }

func authorAddresses(h Header) ([]address, string) {
	froms := h.Values("From")
	if len(froms) == 0 {
		return nil, "no From header field"
	}
	var out []address
	var whys []string
	for _, v := range froms {
		list, why := fromAddresses(v)
		out = append(out, list...)
		if why != "" {
			whys = append(whys, why)
		}
	}
	if len(out) == 0 {
		if len(whys) == 0 {
			return nil, "From header field holds no address"
		}
		return nil, whys[0]
	}
	return out, ""
}

// fromAddresses reads the addresses of one From value with a usable
// domain. A value that parses as RFC 5322 gives its addresses (groups
// flattened); one that does not is scanned for every addr-spec it holds
// (see scanAddresses). why says what was skipped, when nothing is left.
func fromAddresses(v string) (out []address, why string) {
	list, err := addrParser.ParseList(stripGroups(v))
	var raw []string
	if err == nil {
		for _, a := range list {
			raw = append(raw, a.Address)
		}
	} else {
		raw = scanAddresses(v)
		why = fmt.Sprintf("From header field %q: %v", truncate(v, 80), err)
	}
	for _, a := range raw {
		local, d, ok := cutAt(a)
		if !ok || d == "" {
			why = fmt.Sprintf("From address %q has no domain", truncate(a, 80))
			continue
		}
		ad, err := ToASCII(d)
		if err != nil {
			why = fmt.Sprintf("From domain %q: %v", truncate(d, 80), err)
			continue
		}
		out = append(out, address{local: local, domain: ad})
	}
	if len(out) > 0 {
		why = ""
	}
	return out, why
}

// scanAddresses finds the addr-specs of a From value that is not valid
// RFC 5322: every word holding an "@", where words end at white space,
// control characters and the specials that end an address. A complete
// comment or quoted string is skipped (what a display name says is not
// an address); an unterminated one is read as words, so that a missing
// quote cannot hide an address from us that a mail reader still shows.
func scanAddresses(v string) []string {
	var out []string
	word := func(w string) {
		if strings.Contains(w, "@") {
			out = append(out, w)
		}
	}
	start := -1
	end := func(i int) {
		if start >= 0 {
			word(v[start:i])
			start = -1
		}
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '"':
			end(i)
			if j := closeQuote(v, i); j > 0 {
				i = j
			}
		case c == '(':
			end(i)
			if j := closeComment(v, i); j > 0 {
				i = j
			}
		case c <= ' ' || c == 0x7f || strings.IndexByte(",;:<>)", c) >= 0:
			end(i)
		default:
			if start < 0 {
				start = i
			}
		}
	}
	end(len(v))
	return out
}

// closeQuote returns the index of the quote closing the quoted string
// that opens at i, or -1.
func closeQuote(v string, i int) int {
	for j := i + 1; j < len(v); j++ {
		switch v[j] {
		case '\\':
			j++
		case '"':
			return j
		}
	}
	return -1
}

// closeComment returns the index of the parenthesis closing the
// (nested) comment that opens at i, or -1.
func closeComment(v string, i int) int {
	depth := 0
	for j := i; j < len(v); j++ {
		switch v[j] {
		case '\\':
			j++
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// malformedFrom says what makes a From field unreadable in a way that a
// mail reader may show another address than the one we evaluate, or "":
// a bare CR or a NUL inside it (RFC 5322 2.2 allows neither). Readers
// differ on a bare CR (a line break to some, nothing to others), so no
// domain read from such a field is safe to evaluate; the message is
// refused as malformed.
func (h Header) malformedFrom() string {
	for _, f := range h.Fields {
		if !strings.EqualFold(f.Name, "From") {
			continue
		}
		v := strings.ReplaceAll(f.Raw, "\r\n", "")
		switch {
		case strings.IndexByte(v, '\r') >= 0:
			return "the From header field contains a bare carriage return"
		case strings.IndexByte(v, 0) >= 0:
			return "the From header field contains a NUL character"
		}
	}
	return ""
}

// stripGroups removes "name:" and ";" of RFC 5322 groups, which net/mail
// does not understand.
func stripGroups(v string) string {
	if !strings.Contains(v, ":") || strings.ContainsAny(v, "\"") {
		return v
	}
	i := strings.IndexByte(v, ':')
	if strings.ContainsAny(v[:i], "<@") {
		return v
	}
	return strings.TrimSuffix(strings.TrimSpace(v[i+1:]), ";")
}

func cutAt(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr, "", false
	}
	return addr[:i], addr[i+1:], true
}

// ToASCII lower-cases a domain and turns U-labels into A-labels (RFC 9989
// 5.3.1, RFC 5890 2.3).
func ToASCII(d string) (string, error) {
	d = strings.TrimSuffix(strings.TrimSpace(d), ".")
	ascii := true
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		// IDNA maps some characters to nothing (U+034F, the
		// combining grapheme joiner): "@\u034f" must not become the
		// empty domain (found by FuzzFromHeader).
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", err
		}
		d = strings.TrimSuffix(a, ".")
	}
	if d == "" || strings.ContainsAny(d, " \t\\\"<>()[],;:@") {
		return "", fmt.Errorf("%q is not a domain name", d)
	}
	return strings.ToLower(d), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
