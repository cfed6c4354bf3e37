package authres

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The formatter as it was before it appended into one buffer (it built
// a string per part, per comment, per quoted value): FuzzFormat checks
// the two agree byte for byte.

// Format returns the field value for authservID and results, on one line,
// without leading space: "mx.example.net; spf=pass smtp.mailfrom=...".
// With no results it is "mx.example.net; none" (RFC 8601 2.2).
func refFormat(authservID string, results []Result) string {
	return strings.Join(refParts(authservID, results), " ")
}

// Fold returns the field value folded for a header: each resinfo on its
// own line, continuation lines starting with a tab, long lines broken
// between words; nl is the line ending ("\r\n", or "\n" for milters).
func refFold(authservID string, results []Result, nl string) string {
	var b strings.Builder
	for i, p := range refParts(authservID, results) {
		if i > 0 {
			b.WriteString(nl + "\t")
		}
		b.WriteString(refFoldWords(p, nl, 8))
	}
	return b.String()
}

// clip shortens s to at most n bytes, at a UTF-8 boundary, marking the cut.
func refClip(s string, n int) string {
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
func refParts(authservID string, results []Result) []string {
	id := refValue(authservID)
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
			b.WriteString(" " + refComment(refClip(r.Comment, maxText)))
		}
		if r.Reason != "" {
			b.WriteString(" reason=" + refQuote(refClip(r.Reason, maxText)))
		}
		for _, p := range r.Props {
			b.WriteByte(' ')
			if p.Type != "" {
				b.WriteString(strings.ToLower(p.Type) + ".")
			}
			b.WriteString(strings.ToLower(p.Property) + "=" + refPvalue(refClip(p.Value, maxValue)))
			if p.Comment != "" {
				b.WriteString(" " + refComment(refClip(p.Comment, maxText)))
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
func refFoldWords(s, nl string, indent int) string {
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
func refIsTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// value writes a value: a token if it can be one, else a quoted-string.
func refValue(s string) string {
	if s != "" && refAllToken(s) {
		return s
	}
	return refQuote(s)
}

func refAllToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !refIsTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// pvalue writes a property value: a token, a domain name, or
// local-part@domain with a dot-atom local part; anything else quoted.
func refPvalue(s string) string {
	if s == "" {
		return `""`
	}
	if refAllToken(s) {
		return s
	}
	local, domain, hasAt := refCutLast(s, '@')
	if hasAt && refIsDomainName(domain) && (local == "" || refIsDotAtom(local)) {
		return s
	}
	return refQuote(s)
}

func refCutLast(s string, c byte) (before, after string, found bool) {
	i := strings.LastIndexByte(s, c)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

func refIsDomainName(s string) bool {
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
func refIsDotAtom(s string) bool {
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

func refQuote(s string) string {
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
func refComment(s string) string {
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

// FuzzFormat: Format and Fold agree byte for byte with the formatter
// they replaced, whatever the results hold (the sender writes much of
// them: addresses, domains, selectors, reasons).
func FuzzFormat(f *testing.F) {
	f.Add("mx.test", "dkim", "pass", "", "", "header", "d", "example.org", "", "x@y")
	f.Add("mx test", "SPF", "Fail", "a (b); c", `why "not"`, "smtp", "mailfrom", "a b@c", "c;(", "évil@exämple.org")
	f.Add("", "dmarc", "none", "\r\n", "\\", "", "", "", "", "..@")
	f.Fuzz(func(t *testing.T, id, method, value, comment, reason, ptype, prop, pval, pcomment, long string) {
		results := []Result{
			{Method: method, Value: value, Comment: comment, Reason: reason,
				Props: []Prop{{Type: ptype, Property: prop, Value: pval, Comment: pcomment}, {Type: "header", Property: "from", Value: long}}},
			{Method: "dkim", Value: "pass", Props: []Prop{{Type: "header", Property: "d", Value: long + long + long}}},
		}
		for _, rs := range [][]Result{nil, results[:1], results} {
			if got, want := Format(id, rs), refFormat(id, rs); got != want {
				t.Fatalf("Format:\n%q\nwant\n%q", got, want)
			}
			for _, nl := range []string{"\n", "\r\n"} {
				got := Fold(id, rs, nl)
				if un := strings.ReplaceAll(got, nl+"\t", " "); un != Format(id, rs) {
					t.Fatalf("Fold does not unfold to Format's value:\n%q\n%q", got, un)
				}
				// Methods, results, property types and names are the
				// engine's keywords (FoldValue); the rest is anything.
				if !keywords(method, value, ptype, prop) {
					continue
				}
				if want := refFold(id, rs, nl); got != want {
					t.Fatalf("Fold:\n%q\nwant\n%q", got, want)
				}
			}
		}
	})
}

// keywords says whether each s is made of token characters.
func keywords(ss ...string) bool {
	for _, s := range ss {
		for i := 0; i < len(s); i++ {
			if !isTokenChar(s[i]) || s[i] == ';' {
				return false
			}
		}
	}
	return true
}
