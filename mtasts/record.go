package mtasts

import (
	"errors"
	"fmt"
	"strings"
)

// Record is a domain's _mta-sts TXT record (RFC 8461 3.1).
type Record struct {
	// ID changes whenever the policy does: a sender fetches the policy
	// again when it sees another id.
	ID string
}

// ErrNoRecord: the domain has no usable MTA-STS record, so no policy
// (RFC 8461 3.1: none, several, or a malformed one).
var ErrNoRecord = errors.New("mtasts: no MTA-STS record")

// SelectRecord picks the domain's record from its _mta-sts TXT
// records: those that do not start with "v=STSv1;" are discarded, and
// exactly one must remain and be valid (RFC 8461 3.1).
func SelectRecord(txts []string) (Record, error) {
	var cands []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1;") || t == "v=STSv1" {
			cands = append(cands, t)
		}
	}
	switch len(cands) {
	case 0:
		return Record{}, fmt.Errorf("%w: no TXT record starts with v=STSv1", ErrNoRecord)
	case 1:
		return ParseRecord(cands[0])
	default:
		return Record{}, fmt.Errorf("%w: %d records start with v=STSv1 (there must be one)", ErrNoRecord, len(cands))
	}
}

// ParseRecord parses one record: "v=STSv1; id=..." and optional
// extension fields, separated by ";" with optional spaces.
func ParseRecord(txt string) (Record, error) {
	var r Record
	fields := strings.Split(txt, ";")
	if strings.TrimRight(fields[0], " \t") != "v=STSv1" || fields[0] != strings.TrimLeft(fields[0], " \t") {
		return r, fmt.Errorf("%w: %q does not start with v=STSv1", ErrNoRecord, clip(txt))
	}
	if last := len(fields) - 1; last > 0 && strings.Trim(fields[last], " \t") == "" {
		fields = fields[:last] // a trailing ";"
	}
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		name, value, ok := strings.Cut(f, "=")
		if !ok || !validExtName(name) || value == "" || strings.ContainsAny(value, " \t;=") {
			return r, fmt.Errorf("%w: field %q in %q", ErrNoRecord, clip(f), clip(txt))
		}
		if name == "id" && r.ID == "" { // of two, the first (RFC 8461 3.1)
			if len(value) > 32 || !alnum(value) {
				return r, fmt.Errorf("%w: id %q is not 1 to 32 letters and digits", ErrNoRecord, clip(value))
			}
			r.ID = value
		}
	}
	if r.ID == "" {
		return r, fmt.Errorf("%w: no id in %q", ErrNoRecord, clip(txt))
	}
	return r, nil
}

func alnum(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// validExtName: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validExtName(s string) bool {
	if s == "" || len(s) > 32 || !alnum(s[:1]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(string(c)) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
