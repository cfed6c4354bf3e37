package spf

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// SPF record syntax, RFC 7208 section 12. The SPF library evaluates a
// record term by term and stops at the first match, so a syntax error
// after a match goes unnoticed there; RFC 7208 4.6 asks for permerror for
// "any syntax errors anywhere in the record", before evaluation. We check
// every record the evaluation fetches against the full grammar.

// ErrSyntax is wrapped by every error CheckRecord returns.
var ErrSyntax = errors.New("spf: syntax error")

// IsRecord reports whether a TXT string is an SPF version 1 record
// (RFC 7208 4.5: "v=spf1" followed by a space or the end).
func IsRecord(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

// CheckRecord checks an SPF record against the RFC 7208 section 12
// grammar. The error names the offending term.
func CheckRecord(rec string) error {
	if !IsRecord(rec) {
		return fmt.Errorf("%w: record does not start with v=spf1", ErrSyntax)
	}
	var seenRedirect, seenExp bool
	for _, term := range strings.Split(rec[6:], " ") {
		if term == "" {
			continue // terms = *( 1*SP ( directive / modifier ) ), record = version terms *SP
		}
		if err := checkTerm(term, &seenRedirect, &seenExp); err != nil {
			return fmt.Errorf("%w: term %q: %v", ErrSyntax, term, err)
		}
	}
	return nil
}

func checkTerm(term string, seenRedirect, seenExp *bool) error {
	// modifier = name "=" macro-string, with name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
	if i := strings.IndexByte(term, '='); i > 0 && isModifierName(term[:i]) {
		name, value := strings.ToLower(term[:i]), term[i+1:]
		switch name {
		case "redirect", "exp":
			// RFC 7208 6: each MUST NOT appear more than once.
			seen := seenRedirect
			if name == "exp" {
				seen = seenExp
			}
			if *seen {
				return fmt.Errorf("%s= appears twice", name)
			}
			*seen = true
			return checkDomainSpec(value, false)
		default:
			return checkMacroString(value, false)
		}
	}

	// directive = [ qualifier ] mechanism
	if term[0] == '+' || term[0] == '-' || term[0] == '?' || term[0] == '~' {
		term = term[1:]
	}
	name, arg, hasArg := term, "", false
	if i := strings.IndexAny(term, ":/"); i >= 0 {
		name, arg = term[:i], term[i:]
		hasArg = true
	}
	switch strings.ToLower(name) {
	case "all":
		if hasArg {
			return errors.New("all takes no argument")
		}
	case "include", "exists":
		if !strings.HasPrefix(arg, ":") {
			return fmt.Errorf("%s needs :domain", name)
		}
		return checkDomainSpec(arg[1:], false)
	case "ptr":
		if !hasArg {
			return nil
		}
		if !strings.HasPrefix(arg, ":") {
			return errors.New("ptr takes no CIDR length")
		}
		return checkDomainSpec(arg[1:], false)
	case "a", "mx":
		if !hasArg {
			return nil
		}
		spec, cidr := splitDualCIDR(arg)
		if spec != "" {
			if !strings.HasPrefix(spec, ":") {
				return fmt.Errorf("bad argument %q", arg)
			}
			if err := checkDomainSpec(spec[1:], false); err != nil {
				return err
			}
		}
		return checkDualCIDR(cidr)
	case "ip4":
		if !strings.HasPrefix(arg, ":") {
			return errors.New("ip4 needs :address")
		}
		addr, length, _ := strings.Cut(arg[1:], "/")
		if !isIP4Network(addr) {
			return fmt.Errorf("bad IPv4 address %q", addr)
		}
		if strings.Contains(arg[1:], "/") && !isCIDRLength(length, 32) {
			return fmt.Errorf("bad IPv4 prefix length %q", length)
		}
	case "ip6":
		if !strings.HasPrefix(arg, ":") {
			return errors.New("ip6 needs :address")
		}
		addr, length, _ := strings.Cut(arg[1:], "/")
		if ip := net.ParseIP(addr); ip == nil || !strings.Contains(addr, ":") {
			return fmt.Errorf("bad IPv6 address %q", addr)
		}
		if strings.Contains(arg[1:], "/") && !isCIDRLength(length, 128) {
			return fmt.Errorf("bad IPv6 prefix length %q", length)
		}
	default:
		return errors.New("unknown mechanism")
	}
	return nil
}

func isModifierName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// splitDualCIDR splits "[:domain-spec][/n][//m]" into the domain part and
// the CIDR part. A domain-spec may itself contain "/" (macro-literal), but
// never ends in "/digits", since its domain-end is a toplabel or a macro.
func splitDualCIDR(arg string) (spec, cidr string) {
	end := len(arg)
	// ip6 part: "//digits" at the end
	if i := strings.LastIndex(arg[:end], "//"); i >= 0 && allDigits(arg[i+2:end]) && i+2 < end {
		end = i
	}
	// ip4 part: "/digits" before it
	if i := strings.LastIndexByte(arg[:end], '/'); i >= 0 && i+1 < end && allDigits(arg[i+1:end]) {
		end = i
	}
	return arg[:end], arg[end:]
}

// checkDualCIDR checks dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ].
func checkDualCIDR(s string) error {
	if s == "" {
		return nil
	}
	v4, v6, dual := strings.Cut(s, "//")
	if v4 != "" {
		if v4[0] != '/' || !isCIDRLength(v4[1:], 32) {
			return fmt.Errorf("bad IPv4 prefix length %q", v4)
		}
	}
	if dual && !isCIDRLength(v6, 128) {
		return fmt.Errorf("bad IPv6 prefix length %q", v6)
	}
	return nil
}

// isCIDRLength checks "0" / %x31-39 0*2DIGIT within 0..max.
func isCIDRLength(s string, max int) bool {
	if s == "" || !allDigits(s) || len(s) > 3 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	n, err := strconv.Atoi(s)
	return err == nil && n <= max
}

// isIP4Network checks qnum "." qnum "." qnum "." qnum, without leading zeros.
func isIP4Network(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if !isCIDRLength(p, 255) {
			return false
		}
	}
	return true
}

// checkDomainSpec checks domain-spec = macro-string domain-end, with
// domain-end = ( "." toplabel [ "." ] ) / macro-expand. The macro letters
// c, r and t are allowed only in exp text (RFC 7208 7.2).
func checkDomainSpec(s string, explain bool) error {
	if s == "" {
		return errors.New("empty domain")
	}
	if err := checkMacroString(s, explain); err != nil {
		return err
	}
	if endsWithMacro(s) {
		return nil
	}
	t := strings.TrimSuffix(s, ".")
	i := strings.LastIndexByte(t, '.')
	if i < 0 {
		return fmt.Errorf("domain %q has no top-level label", s)
	}
	if !isTopLabel(t[i+1:]) {
		return fmt.Errorf("domain %q: bad top-level label %q", s, t[i+1:])
	}
	return nil
}

// endsWithMacro reports whether s ends with a complete macro-expand.
func endsWithMacro(s string) bool {
	if strings.HasSuffix(s, "}") {
		i := strings.LastIndex(s, "%{")
		return i >= 0 && !strings.Contains(s[i:], "%%")
	}
	// "%%", "%_" and "%-" are macro-expands too, when the % is not itself
	// the second half of an escaped "%%".
	if len(s) >= 2 && s[len(s)-2] == '%' && strings.ContainsRune("%_-", rune(s[len(s)-1])) {
		n := 0
		for i := len(s) - 2; i >= 0 && s[i] == '%'; i-- {
			n++
		}
		return n%2 == 1
	}
	return false
}

// isTopLabel checks toplabel = ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
func isTopLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	alpha := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlpha(c):
			alpha = true
		case isDigit(c):
		case c == '-':
			if i == 0 || i == len(s)-1 {
				return false
			}
		default:
			return false
		}
	}
	// All-numeric labels are not top labels; a hyphenated one is (the
	// second alternative), e.g. "123-456".
	return alpha || strings.Contains(s, "-")
}

// checkMacroString checks macro-string = *( macro-expand / macro-literal ),
// and with explain set, explain-string = *( macro-string / SP ).
func checkMacroString(s string, explain bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+1 >= len(s) {
				return errors.New("lone % at the end")
			}
			switch s[i+1] {
			case '%', '_', '-':
				i++
				continue
			case '{':
			default:
				return fmt.Errorf("bad macro %q", s[i:i+2])
			}
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return errors.New("unterminated macro")
			}
			if err := checkMacroBody(s[i+2:i+j], explain); err != nil {
				return err
			}
			i += j
		case c == ' ' && explain:
		case c >= 0x21 && c <= 0x7e:
		default:
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// checkMacroBody checks macro-letter transformers *delimiter.
func checkMacroBody(b string, explain bool) error {
	if b == "" {
		return errors.New("empty macro")
	}
	letter := b[0] | 0x20
	if !strings.ContainsRune("slodiphcrtv", rune(letter)) || !isAlpha(b[0]) {
		return fmt.Errorf("unknown macro letter %q", b[0])
	}
	if strings.ContainsRune("crt", rune(letter)) && !explain {
		return fmt.Errorf("macro letter %q is allowed only in exp text", b[0])
	}
	i := 1
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	if i < len(b) && (b[i] == 'r' || b[i] == 'R') {
		i++
	}
	for ; i < len(b); i++ {
		if !strings.ContainsRune(".-+,/_=", rune(b[i])) {
			return fmt.Errorf("bad macro transformer or delimiter %q", b[i])
		}
	}
	return nil
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// CheckExplanation checks explanation text with SPF macros (RFC 7208 12,
// explain-string), as used for the default explanation.
func CheckExplanation(s string) error {
	if err := checkMacroString(s, true); err != nil {
		return fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return nil
}
