package milter

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/wehr/wehr/store"
)

// History keeps, per author domain, the client networks (/24, /64) that
// delivered DMARC-passing mail, in the store shared by every MX. The
// engine reads it as a refusal booster; the milter writes it.
type History struct {
	st   store.Store
	keep time.Duration
}

// NewHistory makes a history over st; entries live keep after their last
// passing message.
func NewHistory(st store.Store, keep time.Duration) *History {
	if keep <= 0 {
		keep = 180 * 24 * time.Hour
	}
	return &History{st: st, keep: keep}
}

func historyKey(domain string, client net.IP) (string, bool) {
	a, ok := netip.AddrFromSlice(client)
	if !ok {
		return "", false
	}
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return "hist:" + strings.ToLower(domain) + ":" + p.String(), true
}

// Passed implements mailauth.History.
func (h *History) Passed(ctx context.Context, domain string, client net.IP) (bool, error) {
	k, ok := historyKey(domain, client)
	if !ok {
		return false, nil
	}
	_, found, err := h.st.Get(ctx, k)
	return found, err
}

// Record notes a passing message of domain from client.
func (h *History) Record(ctx context.Context, domain string, client net.IP) error {
	k, ok := historyKey(domain, client)
	if !ok {
		return nil
	}
	return h.st.Set(ctx, k, []byte("1"), h.keep)
}
