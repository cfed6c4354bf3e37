package authres

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax is wrapped by Parse's errors.
var ErrSyntax = errors.New("authres: syntax error")

type tokKind int

const (
	tWord    tokKind = iota // a run of non-special characters
	tQuoted                 // quoted-string, unescaped
	tComment                // comment text, unescaped, outer parentheses removed
	tSemi
	tEquals
)

type token struct {
	kind tokKind
	text string
	// glued is set when no whitespace or comment separates this token
	// from the previous one.
	glued bool
}

// lex splits an A-R value into tokens. Folding whitespace is skipped;
// comments nest and may contain ";" (RFC 5322 3.2.2).
func lex(s string) ([]token, error) {
	var toks []token
	glued := false
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
			glued = false
		case c == '(':
			depth := 0
			var b strings.Builder
			j := i
			for ; j < len(s); j++ {
				d := s[j]
				if d == '\\' && j+1 < len(s) {
					j++
					b.WriteByte(s[j])
					continue
				}
				if d == '(' {
					depth++
					if depth == 1 {
						continue
					}
				}
				if d == ')' {
					depth--
					if depth == 0 {
						break
					}
				}
				b.WriteByte(d)
			}
			if depth != 0 {
				return nil, fmt.Errorf("%w: unterminated comment", ErrSyntax)
			}
			toks = append(toks, token{kind: tComment, text: b.String()})
			i = j + 1
			glued = false
		case c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("%w: unterminated quoted string", ErrSyntax)
			}
			toks = append(toks, token{kind: tQuoted, text: b.String(), glued: glued})
			i = j + 1
			glued = true
		case c == ';':
			toks = append(toks, token{kind: tSemi, text: ";"})
			i++
			glued = false
		case c == '=':
			toks = append(toks, token{kind: tEquals, text: "=", glued: glued})
			i++
			glued = true
		case c == ')':
			return nil, fmt.Errorf("%w: unbalanced )", ErrSyntax)
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n()\";=", rune(s[j])) {
				j++
			}
			toks = append(toks, token{kind: tWord, text: s[i:j], glued: glued})
			i = j
			glued = true
		}
	}
	return toks, nil
}

// parser walks tokens, skipping comments but remembering the last one.
type parser struct {
	toks        []token
	pos         int
	lastComment string
}

func (p *parser) peek() (token, bool) {
	for p.pos < len(p.toks) && p.toks[p.pos].kind == tComment {
		p.lastComment = p.toks[p.pos].text
		p.pos++
	}
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.pos], true
}

func (p *parser) next() (token, bool) {
	t, ok := p.peek()
	if ok {
		p.pos++
	}
	return t, ok
}

// value reads a value or pvalue: a word, a quoted string, or a quoted
// local part glued to "@domain".
func (p *parser) value() (string, error) {
	t, ok := p.next()
	// A local part may start with "=" (RFC 5322 atext): smtp.mailfrom==x@example.org.
	if !ok || (t.kind != tWord && t.kind != tQuoted && !(t.kind == tEquals && t.glued)) {
		return "", fmt.Errorf("%w: value expected", ErrSyntax)
	}
	v := t.text
	// A value runs on while the next token is glued to it: "=" inside
	// a local part or base64 (a+b=c@example.org, header.b=Ab12=), or a
	// quoted local part followed by "@domain".
	for {
		n, ok := p.peekRaw()
		if !ok || !n.glued || n.kind == tSemi || n.kind == tComment {
			break
		}
		if n.kind == tQuoted && t.kind == tQuoted {
			break
		}
		p.pos++
		v += n.text
	}
	return v, nil
}

// peekRaw looks at the next token without skipping comments.
func (p *parser) peekRaw() (token, bool) {
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.pos], true
}

// AuthservID returns the authserv-id of an A-R field value, lower-cased
// for comparison is up to the caller. Comments and folding around it are
// skipped.
func AuthservID(v string) (string, error) {
	toks, err := lex(v)
	if err != nil {
		return "", err
	}
	p := &parser{toks: toks}
	return p.value()
}

// Parse reads an A-R field value: the authserv-id and the results. A
// "none" result list gives no results.
func Parse(v string) (authservID string, results []Result, err error) {
	toks, err := lex(v)
	if err != nil {
		return "", nil, err
	}
	p := &parser{toks: toks}
	if authservID, err = p.value(); err != nil {
		return "", nil, fmt.Errorf("%w: authserv-id expected", ErrSyntax)
	}
	// Optional version.
	if t, ok := p.peek(); ok && t.kind == tWord && isDigits(t.text) {
		p.pos++
	}
	for {
		t, ok := p.next()
		if !ok {
			return authservID, results, nil
		}
		if t.kind != tSemi {
			return authservID, results, fmt.Errorf("%w: \";\" expected before %q", ErrSyntax, t.text)
		}
		r, none, err := p.resinfo()
		if err != nil {
			return authservID, results, err
		}
		if none {
			continue
		}
		results = append(results, r)
	}
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// resinfo reads one method=result with its reason and properties, after
// the ";". none reports the "none" of a result-less header.
func (p *parser) resinfo() (r Result, none bool, err error) {
	t, ok := p.next()
	if !ok || t.kind != tWord {
		return r, false, fmt.Errorf("%w: method expected", ErrSyntax)
	}
	method := t.text
	if n, ok := p.peek(); (!ok || n.kind == tSemi) && strings.EqualFold(method, "none") {
		return r, true, nil
	}
	if n, ok := p.next(); !ok || n.kind != tEquals {
		return r, false, fmt.Errorf("%w: \"=\" expected after method %q", ErrSyntax, method)
	}
	if i := strings.IndexByte(method, '/'); i >= 0 {
		method = method[:i] // method-version
	}
	if method == "" {
		return r, false, fmt.Errorf("%w: empty method", ErrSyntax)
	}
	res, ok := p.next()
	if !ok || res.kind != tWord {
		return r, false, fmt.Errorf("%w: result expected for %q", ErrSyntax, method)
	}
	r = Result{Method: strings.ToLower(method), Value: strings.ToLower(res.text)}
	p.lastComment = ""
	for {
		t, ok := p.peek()
		if r.Comment == "" && p.lastComment != "" && len(r.Props) == 0 {
			r.Comment = p.lastComment
		}
		if !ok || t.kind == tSemi {
			return r, false, nil
		}
		if t.kind != tWord {
			return r, false, fmt.Errorf("%w: property expected in %s result", ErrSyntax, r.Method)
		}
		p.pos++
		if n, ok := p.next(); !ok || n.kind != tEquals {
			return r, false, fmt.Errorf("%w: \"=\" expected after %q", ErrSyntax, t.text)
		}
		v, err := p.value()
		if err != nil {
			return r, false, err
		}
		if strings.EqualFold(t.text, "reason") {
			r.Reason = v
			continue
		}
		ptype, prop, found := strings.Cut(t.text, ".")
		if !found {
			// Not RFC 8601 (authentication_milter writes x-bits=1024),
			// but harmless: keep it without a ptype.
			ptype, prop = "", t.text
		}
		if found && (ptype == "" || prop == "") {
			return r, false, fmt.Errorf("%w: %q is not ptype.property", ErrSyntax, t.text)
		}
		r.Props = append(r.Props, Prop{Type: strings.ToLower(ptype), Property: strings.ToLower(prop), Value: v})
	}
}

// LooseID returns the authserv-id a mail reader could take from an A-R
// field value, however it is written, for deciding whether a field
// claims to be ours: leading comments and white space skipped, up to the
// first ";", lower-cased, quotes and backslashes dropped, cut at the
// first character a host name cannot hold, trailing dots removed. So
// "mx.example.", "mx.example\u00a0", `mx\.example`, `"mx.example"` and
// "mx.example=" are all mx.example (RFC 8601 5: the fields claiming our
// id must go, in every spelling).
func LooseID(v string) string {
	s := v
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		if !strings.HasPrefix(s, "(") {
			break
		}
		depth, i := 0, 0
		for ; i < len(s); i++ {
			if s[i] == '\\' {
				i++
				continue
			}
			if s[i] == '(' {
				depth++
			} else if s[i] == ')' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		if i >= len(s) {
			return ""
		}
		s = s[i+1:]
	}
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	s = strings.ToLower(s)
	s = strings.NewReplacer(`\`, "", `"`, "").Replace(s)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			s = s[:i]
			break
		}
	}
	return strings.TrimRight(s, ".")
}
