// Package mtasts is SMTP MTA Strict Transport Security (RFC 8461) for
// Postfix's outbound mail: the _mta-sts TXT record and the policy file
// a receiving domain publishes, what they mean for a connection to one
// of its MX hosts, and what Postfix's smtp_tls_policy_maps is told.
package mtasts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wehr/wehr/dnsname"
)

// Mode is a policy's mode (RFC 8461 5).
type Mode string

const (
	// Enforce: deliver only over TLS with a certificate valid for an MX
	// host the policy names.
	Enforce Mode = "enforce"
	// Testing: deliver anyway, report failures (TLS-RPT).
	Testing Mode = "testing"
	// None: the domain withdrew its policy.
	None Mode = "none"
)

// MaxMaxAge is the longest a policy may be cached (RFC 8461 3.2).
const MaxMaxAge = 31557600 * time.Second

// MaxPolicySize bounds a policy file (RFC 8461 3.3: 64 KiB).
const MaxPolicySize = 64 << 10

// Policy is a parsed policy file (RFC 8461 3.2).
type Policy struct {
	Mode   Mode
	MaxAge time.Duration
	// MX are the MX host patterns: a host name, or "*." and a domain
	// for any host one label below it (RFC 8461 4.1).
	MX []string
}

// ErrPolicy is wrapped by every error of ParsePolicy.
var ErrPolicy = errors.New("mtasts: bad policy")

// ParsePolicy parses a policy file: "key: value" lines separated by LF
// or CRLF (RFC 8461 3.2). Field names are case-sensitive; unknown fields
// are ignored; mx may repeat, and of another field given twice the first
// counts. A max_age above the maximum is lowered to it.
func ParsePolicy(body []byte) (Policy, error) {
	var p Policy
	if len(body) > MaxPolicySize {
		return p, fmt.Errorf("%w: %d bytes, more than %d", ErrPolicy, len(body), MaxPolicySize)
	}
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	seen := map[string]bool{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, " \t")
		if line == "" {
			continue // blank lines, and the last line's terminator
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return p, fmt.Errorf("%w: line %d %q is not \"key: value\"", ErrPolicy, i+1, clip(line))
		}
		value = strings.TrimLeft(value, " \t")
		if key != "mx" && seen[key] {
			continue // RFC 8461 3.2: all but the first are ignored
		}
		seen[key] = true
		switch key {
		case "version":
			if value != "STSv1" {
				return p, fmt.Errorf("%w: version %q, not STSv1", ErrPolicy, clip(value))
			}
		case "mode":
			switch m := Mode(value); m {
			case Enforce, Testing, None:
				p.Mode = m
			default:
				return p, fmt.Errorf("%w: mode %q is not enforce, testing or none", ErrPolicy, clip(value))
			}
		case "max_age":
			if value == "" || len(value) > 10 || strings.Trim(value, "0123456789") != "" {
				return p, fmt.Errorf("%w: max_age %q is not a number of seconds", ErrPolicy, clip(value))
			}
			secs, _ := strconv.ParseInt(value, 10, 64)
			p.MaxAge = time.Duration(min(secs, int64(MaxMaxAge/time.Second))) * time.Second
		case "mx":
			pat := strings.ToLower(strings.TrimSuffix(value, "."))
			if !validPattern(pat) {
				return p, fmt.Errorf("%w: mx %q is not a host name or *.domain", ErrPolicy, clip(value))
			}
			p.MX = append(p.MX, pat)
		}
	}
	switch {
	case !seen["version"]:
		return p, fmt.Errorf("%w: no version", ErrPolicy)
	case p.Mode == "":
		return p, fmt.Errorf("%w: no mode", ErrPolicy)
	case !seen["max_age"]:
		return p, fmt.Errorf("%w: no max_age", ErrPolicy)
	case p.Mode != None && len(p.MX) == 0:
		return p, fmt.Errorf("%w: mode %s and no mx", ErrPolicy, p.Mode)
	}
	return p, nil
}

// Match reports whether host (an MX host name) is one the policy names
// (RFC 8461 4.1): equal to a pattern, or one label below a "*." one.
func (p Policy) Match(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			if label, parent, ok := strings.Cut(host, "."); ok && label != "" && parent == rest {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

// validPattern: a host name of at least two labels, with an optional
// "*." in front (RFC 8461 3.2, sts-policy-mx-value).
func validPattern(s string) bool {
	return dnsname.Host(strings.TrimPrefix(s, "*."))
}

// clip shortens what a domain publishes for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Publish is what a domain publishes for MTA-STS: the policy file and
// the TXT record whose id names it (RFC 8461 3.1, 3.2). The id is taken
// from the policy's text, so it changes exactly when the policy does.
func Publish(p Policy) (policyFile, record string) {
	var b strings.Builder
	b.WriteString("version: STSv1\r\nmode: " + string(p.Mode) + "\r\n")
	for _, m := range p.MX {
		b.WriteString("mx: " + m + "\r\n")
	}
	b.WriteString("max_age: " + strconv.FormatInt(int64(p.MaxAge/time.Second), 10) + "\r\n")
	policyFile = b.String()
	sum := sha256.Sum256([]byte(policyFile))
	return policyFile, "v=STSv1; id=" + hex.EncodeToString(sum[:8]) + ";"
}
