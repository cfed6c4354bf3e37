package spf

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// macroEnv holds what SPF macros expand to (RFC 7208 7.3).
type macroEnv struct {
	sender   string // s: the identity checked, local@domain
	domain   string // d: the current domain
	ip       net.IP // i, c, v
	helo     string // h
	receiver string // r: our host name
	now      time.Time
	// ptr returns the validated domain name of ip for the p macro.
	ptr func() string
}

// expandMacros expands macro-string s (RFC 7208 7). explain allows the c,
// r and t letters, which are for exp text only.
func (e *macroEnv) expandMacros(s string, explain bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return "", fmt.Errorf("%w: lone %% at the end", ErrSyntax)
		}
		i++
		switch s[i] {
		case '%':
			b.WriteByte('%')
			continue
		case '_':
			b.WriteByte(' ')
			continue
		case '-':
			b.WriteString("%20")
			continue
		case '{':
		default:
			return "", fmt.Errorf("%w: bad macro %%%c", ErrSyntax, s[i])
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("%w: unterminated macro", ErrSyntax)
		}
		body := s[i+1 : i+j]
		i += j
		if err := checkMacroBody(body, explain); err != nil {
			return "", fmt.Errorf("%w: %v", ErrSyntax, err)
		}
		b.WriteString(e.expandOne(body))
	}
	return b.String(), nil
}

// expandDomain expands a domain-spec for a query; a name longer than 253
// characters loses labels on the left until it fits (RFC 7208 7.3).
func (e *macroEnv) expandDomain(spec string) (string, error) {
	d, err := e.expandMacros(spec, false)
	if err != nil {
		return "", err
	}
	d = strings.TrimSuffix(d, ".")
	for len(d) > 253 {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return "", fmt.Errorf("%w: expanded domain too long", ErrSyntax)
		}
		d = d[i+1:]
	}
	return d, nil
}

// expandOne expands one checked macro body: letter, transformers,
// delimiters (RFC 7208 7.3, 7.4).
func (e *macroEnv) expandOne(body string) string {
	letter := body[0]
	var v string
	switch letter | 0x20 {
	case 's':
		v = e.sender
	case 'l':
		v, _, _ = strings.Cut(e.sender, "@")
	case 'o':
		_, v, _ = strings.Cut(e.sender, "@")
	case 'd':
		v = e.domain
	case 'i':
		v = macroIP(e.ip)
	case 'p':
		v = "unknown"
		if e.ptr != nil {
			v = e.ptr()
		}
	case 'v':
		v = "in-addr"
		if e.ip.To4() == nil {
			v = "ip6"
		}
	case 'h':
		v = e.helo
	case 'c':
		v = e.ip.String()
	case 'r':
		v = e.receiver
		if v == "" {
			v = "unknown"
		}
	case 't':
		v = strconv.FormatInt(e.now.Unix(), 10)
	}

	rest := body[1:]
	n := 0
	for len(rest) > 0 && isDigit(rest[0]) {
		n = n*10 + int(rest[0]-'0')
		if n > 1000 {
			n = 1000
		}
		rest = rest[1:]
	}
	hasDigits := len(body[1:]) != len(rest)
	reverse := false
	if len(rest) > 0 && (rest[0] == 'r' || rest[0] == 'R') {
		reverse = true
		rest = rest[1:]
	}
	delims := rest
	if delims == "" {
		delims = "."
	}
	if hasDigits || reverse || rest != "" {
		parts := strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(delims, r) })
		if v != "" && len(parts) == 0 {
			parts = []string{""}
		}
		if reverse {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
		if hasDigits && n > 0 && n < len(parts) {
			parts = parts[len(parts)-n:]
		}
		v = strings.Join(parts, ".")
	}
	// RFC 7208 7.3: an upper-case letter asks for URL escaping.
	if letter >= 'A' && letter <= 'Z' {
		v = urlEscape(v)
	}
	return v
}

// urlEscape escapes everything outside the RFC 3986 unreserved set
// (RFC 7208 7.3).
func urlEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlpha(c) || isDigit(c) || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// macroIP is the i macro: dotted quad for IPv4, dot-separated nibbles for
// IPv6 (RFC 7208 7.3).
func macroIP(ip net.IP) string {
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	ip16 := ip.To16()
	if ip16 == nil {
		return ""
	}
	const hex = "0123456789abcdef"
	var b strings.Builder
	for i, x := range ip16 {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteByte(hex[x>>4])
		b.WriteByte('.')
		b.WriteByte(hex[x&0xf])
	}
	return b.String()
}

// validatedPTR computes the p macro (RFC 7208 5.5, 7.3): a PTR name of ip
// whose addresses include ip, preferring domain or a subdomain of it;
// "unknown" if none.
func validatedPTR(ctx context.Context, r Resolver, ip net.IP, domain string) string {
	names, err := r.LookupAddr(ctx, ip.String())
	if err != nil {
		return "unknown"
	}
	if len(names) > 10 { // RFC 7208 4.6.4
		names = names[:10]
	}
	var valid []string
	for _, n := range names {
		addrs, err := r.LookupIPAddr(ctx, n)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				valid = append(valid, strings.TrimSuffix(n, "."))
				break
			}
		}
	}
	if len(valid) == 0 {
		return "unknown"
	}
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, n := range valid {
		ln := strings.ToLower(n)
		if ln == d || strings.HasSuffix(ln, "."+d) {
			return n
		}
	}
	return valid[0]
}
