package mailauth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
)

// Field is one header field as received.
type Field struct {
	Name string // as written, e.g. "From"
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
	for {
		line, err := r.ReadString('\n')
		h.Size += len(line)
		if max > 0 && h.Size > max {
			return h, fmt.Errorf("%w: more than %d bytes", ErrHeaderTooLarge, max)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return h, fmt.Errorf("read header: %w", err)
		}
		body := strings.TrimRight(line, "\r\n")
		if body == "" {
			return h, nil // end of header (or of input)
		}
		switch {
		case body[0] == ' ' || body[0] == '\t':
			if len(h.Fields) == 0 {
				h.Malformed++
			} else {
				f := &h.Fields[len(h.Fields)-1]
				f.Raw += "\r\n" + body
			}
		default:
			name, raw, ok := strings.Cut(body, ":")
			// RFC 5322 2.2: field names are printable ASCII except
			// colon; "From :" (space before the colon) is obsolete
			// syntax (RFC 5322 4.5.8) that mailers still accept.
			name = strings.TrimRight(name, " \t")
			if !ok || !ValidFieldName(name) {
				h.Malformed++
			} else {
				h.Fields = append(h.Fields, Field{Name: name, Raw: raw})
			}
		}
		if errors.Is(err, io.EOF) {
			return h, nil
		}
	}
}

// ValidFieldName reports whether s may be a header field name (RFC 5322
// 2.2: printable ASCII except colon).
func ValidFieldName(s string) bool {
	if s == "" {
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
func AuthorDomains(h Header) (domains []string, why string) {
	froms := h.Values("From")
	if len(froms) == 0 {
		return nil, "no From header field"
	}
	seen := map[string]bool{}
	for _, v := range froms {
		addrs, err := fromAddresses(v)
		if err != nil {
			return nil, fmt.Sprintf("From header field %q: %v", truncate(v, 80), err)
		}
		for _, a := range addrs {
			_, d, ok := cutAt(a)
			if !ok || d == "" {
				return nil, fmt.Sprintf("From address %q has no domain", a)
			}
			ad, err := ToASCII(d)
			if err != nil {
				return nil, fmt.Sprintf("From domain %q: %v", d, err)
			}
			if !seen[ad] {
				seen[ad] = true
				domains = append(domains, ad)
			}
		}
	}
	if len(domains) == 0 {
		return nil, "From header field holds no address"
	}
	return domains, ""
}

// AuthorAddresses returns the addresses of the message's From fields,
// with lower-case A-label domains; why says what was wrong when there are
// none.
func AuthorAddresses(h Header) (addrs []string, why string) {
	froms := h.Values("From")
	if len(froms) == 0 {
		return nil, "no From header field"
	}
	for _, v := range froms {
		list, err := fromAddresses(v)
		if err != nil {
			return nil, fmt.Sprintf("From header field %q: %v", truncate(v, 80), err)
		}
		for _, a := range list {
			local, d, ok := cutAt(a)
			if !ok || d == "" {
				return nil, fmt.Sprintf("From address %q has no domain", a)
			}
			ad, err := ToASCII(d)
			if err != nil {
				return nil, fmt.Sprintf("From domain %q: %v", d, err)
			}
			addrs = append(addrs, local+"@"+ad)
		}
	}
	if len(addrs) == 0 {
		return nil, "From header field holds no address"
	}
	return addrs, ""
}

// fromAddresses parses the addresses of a From value, leniently: groups
// are flattened, and if the list does not parse as RFC 5322, the
// angle-bracketed or bare addr-specs are taken.
func fromAddresses(v string) ([]string, error) {
	list, err := addrParser.ParseList(stripGroups(v))
	if err == nil {
		var out []string
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out, nil
	}
	var out []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if i := strings.LastIndexByte(part, '<'); i >= 0 {
			if j := strings.IndexByte(part[i:], '>'); j > 0 {
				part = part[i+1 : i+j]
			}
		}
		if strings.Count(part, "@") >= 1 && !strings.ContainsAny(part, " <>\"") {
			out = append(out, part)
		}
	}
	if len(out) == 0 {
		return nil, err
	}
	return out, nil
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
	if ascii {
		if d == "" || strings.ContainsAny(d, " \t\\\"<>()[],;:@") {
			return "", fmt.Errorf("%q is not a domain name", d)
		}
		return strings.ToLower(d), nil
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", err
	}
	return strings.ToLower(a), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
