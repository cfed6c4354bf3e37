// Package dnsname checks the syntax of the DNS names mail
// authentication reads from hostile places (a DKIM signature's d=, an
// MTA-STS policy's mx patterns, a configured domain): labels of lower
// case letters, digits, hyphens and underscores (service labels such as
// _domainkey), each 1 to 63 bytes, the name at most 253 (RFC 1035 2.3.4).
// Callers lower-case first where case does not matter, and add their
// own rules on top (a host name's hyphens, a least number of labels).
package dnsname

import "strings"

// Valid says whether name, without a trailing dot, is such a name.
func Valid(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for l := range strings.SplitSeq(name, ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

// Host says whether name is a host name of at least two labels, none of
// which starts or ends with a hyphen (RFC 952, RFC 1123 2.1).
func Host(name string) bool {
	if !Valid(name) || !strings.Contains(name, ".") {
		return false
	}
	for l := range strings.SplitSeq(name, ".") {
		if l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
