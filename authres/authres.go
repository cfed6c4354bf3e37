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
	return strings.Join(parts(authservID, results), " ")
}

// Fold returns the field value folded for a header: each resinfo on its
// own line, continuation lines starting with a tab, long lines broken
// between words; nl is the line ending ("\r\n", or "\n" for milters).
func Fold(authservID string, results []Result, nl string) string {
	var b strings.Builder
	for i, p := range parts(authservID, results) {
		if i > 0 {
			b.WriteString(nl + "\t")
		}
		b.WriteString(foldWords(p, nl, 8))
	}
	return b.String()
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

// parts returns "authserv-id;" and each "resinfo;" (the last without
// the semicolon).
func parts(authservID string, results []Result) []string {
	id := value(authservID)
	if len(results) == 0 {
		return []string{id + "; none"}
	}
	out := []string{id + ";"}
	for i, r := range results {
		var b strings.Builder
		b.WriteString(strings.ToLower(r.Method))
		b.WriteByte('=')
		b.WriteString(strings.ToLower(r.Value))
		if r.Comment != "" {
			b.WriteString(" " + comment(clip(r.Comment, maxText)))
		}
		if r.Reason != "" {
			b.WriteString(" reason=" + quote(clip(r.Reason, maxText)))
		}
		for _, p := range r.Props {
			b.WriteByte(' ')
			if p.Type != "" {
				b.WriteString(strings.ToLower(p.Type) + ".")
			}
			b.WriteString(strings.ToLower(p.Property) + "=" + pvalue(clip(p.Value, maxValue)))
			if p.Comment != "" {
				b.WriteString(" " + comment(clip(p.Comment, maxText)))
			}
		}
		if i < len(results)-1 {
			b.WriteByte(';')
		}
		out = append(out, b.String())
	}
	return out
}

// foldWords breaks s at spaces outside quotes and comments so that lines
// stay under 78 characters; indent is the width already used by the tab.
func foldWords(s, nl string, indent int) string {
	const width = 78
	if len(s)+indent <= width {
		return s
	}
	var words []string
	depth, quoted, start := 0, false, 0
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
			words = append(words, s[start:i])
			start = i + 1
		}
	}
	words = append(words, s[start:])
	var b strings.Builder
	line := indent
	for i, w := range words {
		if i > 0 {
			if line+1+len(w) > width {
				b.WriteString(nl + "\t")
				line = indent
			} else {
				b.WriteByte(' ')
				line++
			}
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}

// isTokenChar: RFC 2045 token characters (no tspecials, no space or
// controls).
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// value writes a value: a token if it can be one, else a quoted-string.
func value(s string) string {
	if s != "" && allToken(s) {
		return s
	}
	return quote(s)
}

func allToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// pvalue writes a property value: a token, a domain name, or
// local-part@domain with a dot-atom local part; anything else quoted.
func pvalue(s string) string {
	if s == "" {
		return `""`
	}
	if allToken(s) {
		return s
	}
	local, domain, hasAt := cutLast(s, '@')
	if hasAt && isDomainName(domain) && (local == "" || isDotAtom(local)) {
		return s
	}
	return quote(s)
}

func cutLast(s string, c byte) (before, after string, found bool) {
	i := strings.LastIndexByte(s, c)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func isDomainName(s string) bool {
	if s == "" {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c >= 0x80) {
				return false
			}
		}
	}
	return true
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

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\r' || c == '\n':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// comment writes a comment. Semicolons become commas: RFC 8601 allows
// them in comments, but parsers that split on ";" first (go-msgauth's
// among them) would break.
func comment(s string) string {
	var b strings.Builder
	b.WriteByte('(')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '(', ')', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case ';':
			b.WriteByte(',')
		case '\r', '\n':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte(')')
	return b.String()
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
