package tlsrpt

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoRecord: the domain asks for no TLS reports (RFC 8460 3: no
// record, several, or one without rua=).
var ErrNoRecord = errors.New("tlsrpt: no TLS-RPT record")

// SelectRecord picks the _smtp._tls record among a name's TXT records
// and returns its report addresses (RFC 8460 3).
func SelectRecord(txts []string) ([]string, error) {
	var cands []string
	for _, t := range txts {
		if t == "v=TLSRPTv1" || strings.HasPrefix(t, "v=TLSRPTv1;") {
			cands = append(cands, t)
		}
	}
	switch len(cands) {
	case 0:
		return nil, fmt.Errorf("%w: none published", ErrNoRecord)
	case 1:
	default:
		return nil, fmt.Errorf("%w: %d records, senders take none", ErrNoRecord, len(cands))
	}
	for _, f := range strings.Split(cands[0], ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok || strings.TrimSpace(k) != "rua" {
			continue
		}
		var out []string
		for _, u := range strings.Split(v, ",") {
			u = strings.TrimSpace(u)
			if strings.HasPrefix(u, "mailto:") || strings.HasPrefix(u, "https://") {
				out = append(out, clip(u))
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: no mailto: or https: rua=", ErrNoRecord)
}
