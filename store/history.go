package store

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"
)

// PassHistory keeps, per author domain, the client Networks that
// delivered DMARC-passing mail ("hist:DOMAIN:NET"), shared by every MX.
// The milter writes it; the verdict engine reads it as a refusal booster
// (it implements mailauth.History).
type PassHistory struct {
	st   Store
	keep time.Duration
}

// NewPassHistory is the pass history in st; entries live keep after
// their last passing message (180 days if keep is 0).
func NewPassHistory(st Store, keep time.Duration) *PassHistory {
	if keep <= 0 {
		keep = 180 * 24 * time.Hour
	}
	return &PassHistory{st: st, keep: keep}
}

func historyKey(domain string, client net.IP) (string, bool) {
	a, ok := netip.AddrFromSlice(client)
	if !ok {
		return "", false
	}
	return "hist:" + strings.ToLower(domain) + ":" + Network(a).String(), true
}

// Passed says whether domain's mail passed DMARC from client's network.
func (h *PassHistory) Passed(ctx context.Context, domain string, client net.IP) (bool, error) {
	k, ok := historyKey(domain, client)
	if !ok {
		return false, nil
	}
	_, found, err := h.st.Get(ctx, k)
	return found, err
}

// Record notes a passing message of domain from client.
func (h *PassHistory) Record(ctx context.Context, domain string, client net.IP) error {
	k, ok := historyKey(domain, client)
	if !ok {
		return nil
	}
	return h.st.Set(ctx, k, []byte("1"), h.keep)
}
