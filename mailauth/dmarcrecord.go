package mailauth

import (
	"errors"
	"net/url"
	"strings"
)

// DMARC policies (RFC 9989 4.7, the p, sp and np tags).
const (
	PolicyNone       = "none"
	PolicyQuarantine = "quarantine"
	PolicyReject     = "reject"
)

// DMARCRecord is a parsed DMARC Policy Record (RFC 9989 4.7, 4.8).
type DMARCRecord struct {
	// Policy is p=; "" when absent. Subdomain and NonExistent are sp=
	// and np=, "" when absent.
	Policy, Subdomain, NonExistent string
	// BadPolicy is set when p, sp or np is present with an invalid value.
	BadPolicy bool
	// ADKIM and ASPF are 'r' (relaxed, the default) or 's' (strict).
	ADKIM, ASPF byte
	// PSD is 'y', 'n' or 'u' (the default).
	PSD byte
	// Testing is t=y.
	Testing bool
	// PctZero is the legacy pct=0 (RFC 7489), which RFC 9989 dropped.
	PctZero bool
	// RUA and RUF are the syntactically valid reporting URIs.
	RUA, RUF []string
	FO       string
	Raw      string
}

// errNotDMARC: the TXT record is not a DMARC record at all (no v=DMARC1
// first), which discovery skips.
var errNotDMARC = errors.New("not a DMARC record")

// ParseDMARCRecord parses a TXT record. It fails only if the record is
// not a DMARC record: "v=DMARC1" must be the first tag, its value
// case-sensitive (RFC 9989 4.7). Every other problem falls back to the
// tag's default, and unknown tags are ignored (RFC 9989 4.8).
func ParseDMARCRecord(txt string) (*DMARCRecord, error) {
	parts := strings.Split(txt, ";")
	name, val, ok := strings.Cut(parts[0], "=")
	if !ok || !strings.EqualFold(strings.Trim(name, " \t"), "v") || strings.Trim(val, " \t") != "DMARC1" {
		return nil, errNotDMARC
	}
	r := &DMARCRecord{ADKIM: 'r', ASPF: 'r', PSD: 'u', Raw: txt}
	for _, part := range parts[1:] {
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.Trim(name, " \t"))
		val = strings.Trim(val, " \t")
		lval := strings.ToLower(val)
		switch name {
		case "p", "sp", "np":
			var dst *string
			switch name {
			case "p":
				dst = &r.Policy
			case "sp":
				dst = &r.Subdomain
			default:
				dst = &r.NonExistent
			}
			switch lval {
			case PolicyNone, PolicyQuarantine, PolicyReject:
				*dst = lval
			default:
				r.BadPolicy = true
			}
		case "adkim", "aspf":
			if lval == "r" || lval == "s" {
				if name == "adkim" {
					r.ADKIM = lval[0]
				} else {
					r.ASPF = lval[0]
				}
			}
		case "psd":
			if lval == "y" || lval == "n" || lval == "u" {
				r.PSD = lval[0]
			}
		case "t":
			if lval == "y" || lval == "n" {
				r.Testing = lval == "y"
			}
		case "pct":
			r.PctZero = lval == "0"
		case "rua":
			r.RUA = reportURIs(val)
		case "ruf":
			r.RUF = reportURIs(val)
		case "fo":
			r.FO = lval
		}
	}
	return r, nil
}

// reportURIs returns the syntactically valid URIs of a dmarc-urilist,
// without the obsolete "!size" suffix.
func reportURIs(v string) []string {
	var out []string
	for _, u := range strings.Split(v, ",") {
		u = strings.Trim(u, " \t")
		if i := strings.LastIndexByte(u, '!'); i > 0 {
			u = u[:i]
		}
		p, err := url.Parse(u)
		if err != nil || p.Scheme == "" || (p.Opaque == "" && p.Host == "" && p.Path == "") {
			continue
		}
		out = append(out, u)
	}
	return out
}

// Usable applies RFC 9989 4.10.1 to a record's policy tags: a record with
// an invalid p, sp or np acts as p=none (and nothing else) if it has a
// valid rua, and is no policy at all without one. A missing p means none
// (RFC 9989 4.7).
func (r *DMARCRecord) Usable() (*DMARCRecord, bool) {
	if !r.BadPolicy {
		if r.Policy == "" {
			c := *r
			c.Policy = PolicyNone
			return &c, true
		}
		return r, true
	}
	if len(r.RUA) == 0 {
		return nil, false
	}
	c := *r
	c.Policy, c.Subdomain, c.NonExistent = PolicyNone, "", ""
	return &c, true
}
