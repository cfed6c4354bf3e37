// Package authres writes and reads Authentication-Results header fields
// (RFC 8601).
//
// Format builds the field value from results, quoting what needs quoting
// and keeping comments free of ";" so that simple parsers downstream do
// not split inside them; Fold wraps it for the header. Parse reads a field
// value back, understanding comments (which may hold ";" and nested
// parentheses) and quoted strings; AuthservID extracts just the
// authserv-id, so a milter can find headers that claim to be ours.
package authres

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Result is one resinfo: a method, its result and properties.
type Result struct {
	Method  string // spf, dkim, dmarc, iprev, auth, arc
	Value   string // pass, fail, ... (RFC 8601 2.7, RFC 7489 11.2)
	Reason  string // reason="..." (optional)
	Comment string // a comment after the result, for humans (optional)
	Props   []Prop
}

// Prop is a property: ptype.property=value, e.g. smtp.mailfrom=a@b.
type Prop struct {
	Type     string // smtp, header, body, policy
	Property string
	Value    string
	Comment  string // optional comment after the value
}

// Prop returns the value of ptype.property, and whether it is present.
func (r Result) Prop(ptype, property string) (string, bool) {
	for _, p := range r.Props {
		if strings.EqualFold(p.Type, ptype) && strings.EqualFold(p.Property, property) {
			return p.Value, true
		}
	}
	return "", false
}

// Format returns the field value for authservID and results, on one line,
// without leading space: "mx.example.net; spf=pass smtp.mailfrom=...".
// With no results it is "mx.example.net; none" (RFC 8601 2.2).
func Format(authservID string, results []Result) string {
	b := make([]byte, 0, 128+128*len(results))
	b = appendID(b, authservID, len(results) == 0)
	for i, r := range results {
		b = append(b, ' ')
		b = appendResinfo(b, r, i == len(results)-1)
	}
	return string(b)
}

// Fold returns the field value folded for a header: each resinfo on its
// own line, continuation lines starting with a tab, long lines broken
// between words; nl is the line ending ("\r\n", or "\n" for milters).
// It is FoldValue of Format's value.
func Fold(authservID string, results []Result, nl string) string {
	return FoldValue(Format(authservID, results), nl)
}

// FoldValue folds a field value as Format returns it (see Fold), so that
// a caller holding the value does not format the results twice. A
// resinfo ends at a ";" outside quoted strings and comments; Format
// writes methods, results, property types and names as they are, so they
// must be keywords (RFC 8601 2.2), as the engine's are, never text a
// sender wrote. Folding only turns spaces into nl and a tab: the value
// unfolds back to itself.
func FoldValue(value, nl string) string {
	out := make([]byte, 0, len(value)+len(value)/16+16)
	depth, quoted, start, first := 0, false, 0, true
	part := func(end int) {
		if !first {
			out = append(append(out, nl...), '\t')
		}
		out = appendFolded(out, value[start:end], nl, 8)
		first = false
	}
	for i := 0; i < len(value); i++ {
		switch c := value[i]; {
		case c == '\\':
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
		case c == '"' && depth == 0: // a quote in a comment is text
			quoted = true
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ';' && depth == 0 && i+1 < len(value) && value[i+1] == ' ' && value[i+2:] != "none":
			// "id; none" (RFC 8601 2.2) stays on one line.
			part(i + 1)
			start = i + 2
			i++
		}
	}
	if start <= len(value) {
		part(len(value))
	}
	return string(out)
}

// Caps on what a sender can make long (an SPF explanation, a malformed
// tag quoted in a reason, an address): with the number of results
// bounded by the engine, the field stays far below the milter
// protocol's 64 KiB for a header value (issue 10.11).
const (
	maxText  = 200 // a comment or reason
	maxValue = 320 // a property value: a local part and a domain
)

// clip shortens s to at most n bytes, at a UTF-8 boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - 3
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// appendID appends "authserv-id;", or "authserv-id; none" when there
// are no results.
func appendID(b []byte, id string, none bool) []byte {
	b = appendValue(b, id)
	if none {
		return append(b, "; none"...)
	}
	return append(b, ';')
}

// appendResinfo appends one resinfo, with its semicolon unless last.
func appendResinfo(b []byte, r Result, last bool) []byte {
	b = append(b, strings.ToLower(r.Method)...) // ToLower copies nothing already lower case
	b = append(b, '=')
	b = append(b, strings.ToLower(r.Value)...)
	if r.Comment != "" {
		b = appendComment(append(b, ' '), clip(r.Comment, maxText))
	}
	if r.Reason != "" {
		b = appendQuote(append(b, " reason="...), clip(r.Reason, maxText))
	}
	for _, p := range r.Props {
		b = append(b, ' ')
		if p.Type != "" {
			b = append(append(b, strings.ToLower(p.Type)...), '.')
		}
		b = append(append(b, strings.ToLower(p.Property)...), '=')
		b = appendPValue(b, clip(p.Value, maxValue))
		if p.Comment != "" {
			b = appendComment(append(b, ' '), clip(p.Comment, maxText))
		}
	}
	if !last {
		b = append(b, ';')
	}
	return b
}

// appendFolded appends s broken at spaces outside quotes and comments so
// that lines stay under 78 characters; indent is the width already used
// by the tab.
func appendFolded(out []byte, s string, nl string, indent int) []byte {
	const width = 78
	if len(s)+indent <= width {
		return append(out, s...)
	}
	line := indent
	word := func(w string, first bool) {
		if !first {
			if line+1+len(w) > width {
				out = append(append(out, nl...), '\t')
				line = indent
			} else {
				out = append(out, ' ')
				line++
			}
		}
		out = append(out, w...)
		line += len(w)
	}
	depth, quoted, start, first := 0, false, 0, true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
		case quoted:
			if c == '"' {
				quoted = false
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ' ' && depth == 0:
			word(s[start:i], first)
			first = false
			start = i + 1
		}
	}
	word(s[min(start, len(s)):], first)
	return out
}

// isTokenChar: RFC 2045 token characters (no tspecials, no space or
// controls).
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// appendValue appends a value: a token if it can be one, else a
// quoted-string.
func appendValue(b []byte, s string) []byte {
	if s != "" && allToken(s) {
		return append(b, s...)
	}
	return appendQuote(b, s)
}

func allToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// appendPValue appends a property value: a token, a domain name, or
// local-part@domain with a dot-atom local part; anything else quoted.
func appendPValue(b []byte, s string) []byte {
	if s == "" {
		return append(b, `""`...)
	}
	if allToken(s) {
		return append(b, s...)
	}
	local, domain, hasAt := cutLast(s, '@')
	if hasAt && isDomainName(domain) && (local == "" || isDotAtom(local)) {
		return append(b, s...)
	}
	return appendQuote(b, s)
}

func cutLast(s string, c byte) (before, after string, found bool) {
	i := strings.LastIndexByte(s, c)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// isDomainName: labels of letters, digits, '-', '_' or UTF-8, none empty.
func isDomainName(s string) bool {
	if s == "" {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 0x80:
			label++
		default:
			return false
		}
	}
	return label > 0
}

// isDotAtom checks RFC 5322 dot-atom-text.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			continue
		}
		if c <= ' ' || c >= 0x7f && c < 0x80 || strings.ContainsRune(`()<>[]:;@\,."`, rune(c)) {
			return false
		}
	}
	return true
}

func appendQuote(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\r' || c == '\n':
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendComment appends a comment. Semicolons become commas: RFC 8601
// allows them in comments, but parsers that split on ";" first
// (go-msgauth's among them) would break.
func appendComment(b []byte, s string) []byte {
	b = append(b, '(')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '(', ')', '\\':
			b = append(b, '\\', c)
		case ';':
			b = append(b, ',')
		case '\r', '\n':
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return append(b, ')')
}

// CheckID checks the authserv-id is a value (RFC 8601 2.2: a
// token or quoted-string; we want a token, normally a host name).
func CheckID(id string) error {
	if id == "" {
		return errors.New("empty")
	}
	for _, r := range id {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?=`, r) {
			return fmt.Errorf("%q: must be a host name (no spaces or special characters)", id)
		}
	}
	return nil
}
