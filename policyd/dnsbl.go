package policyd

// The DNS block- and allowlists (policyd.dns_lists): queried in
// parallel, cached, only answers that are listings count.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/smtpreply"
)

// List is a DNS blocklist (positive weight) or allowlist (negative).
type List struct {
	Zone   string  `yaml:"zone"`
	Weight float64 `yaml:"weight"`
	// Codes are the answers that mean "listed"; empty: the list's known
	// defaults, or any 127.0.0.0/8 address but 127.0.0.1 and the
	// 127.255.255.0/24 error codes.
	Codes []setting.Network `yaml:"codes"`
}

// knownLists are the return codes of common lists, so that an error
// answer (a quota exceeded, a query through a public resolver) is never
// taken for a listing.
var knownLists = map[string][]string{
	"zen.spamhaus.org":              {"127.0.0.2/31", "127.0.0.4/30", "127.0.0.9/32", "127.0.0.10/31"},
	"sbl.spamhaus.org":              {"127.0.0.2/32", "127.0.0.9/32"},
	"xbl.spamhaus.org":              {"127.0.0.4/30"},
	"pbl.spamhaus.org":              {"127.0.0.10/31"},
	"bl.spamcop.net":                {"127.0.0.2/32"},
	"b.barracudacentral.org":        {"127.0.0.2/32"},
	"psbl.surriel.com":              {"127.0.0.2/32"},
	"bl.mailspike.net":              {"127.0.0.2/32", "127.0.0.10/31", "127.0.0.12/30"},
	"list.dnswl.org":                {"127.0.0.0/16"},
	"swl.spamhaus.org":              {"127.0.2.0/24"},
	"dnsbl.sorbs.net":               {"127.0.0.2/31", "127.0.0.4/30", "127.0.0.8/29"},
	"ix.dnsbl.manitu.net":           {"127.0.0.2/32"},
	"dnsbl-1.uceprotect.net":        {"127.0.0.2/32"},
	"hostkarma.junkemailfilter.com": {"127.0.0.2/32"},
}

var (
	answerNet  = netip.MustParsePrefix("127.0.0.0/8")
	errorCodes = netip.MustParsePrefix("127.255.255.0/24")
	notListed  = netip.MustParseAddr("127.0.0.1")
)

// withKnownCodes gives each list without configured codes the codes of
// knownLists, once, when the pipeline is made.
func withKnownCodes(lists []List) []List {
	out := slices.Clone(lists)
	for i, l := range out {
		out[i].Zone = strings.ToLower(l.Zone)
		if len(l.Codes) > 0 {
			continue
		}
		out[i].Codes = setting.Networks(knownLists[out[i].Zone]...)
	}
	return out
}

// listed reports whether an answer is a listing of l: it must be in
// 127.0.0.0/8 (an answer elsewhere means the zone is hijacked or
// wildcarded), must not be an error code, and must match l's codes.
func (l List) listed(a netip.Addr) (bool, string) {
	if !a.Is4() || !answerNet.Contains(a) {
		return false, fmt.Sprintf("answer %s is outside 127.0.0.0/8", a)
	}
	if errorCodes.Contains(a) {
		return false, fmt.Sprintf("answer %s is the list's error code (refused or over quota)", a)
	}
	if len(l.Codes) == 0 {
		if a == notListed {
			return false, "answer 127.0.0.1 is not a listing"
		}
		return true, ""
	}
	for _, c := range l.Codes {
		if c.Contains(a) {
			return true, ""
		}
	}
	return false, fmt.Sprintf("answer %s is not one of the list's codes", a)
}

// dnsblName is the query name for ip in zone: reversed octets for IPv4,
// reversed nibbles for IPv6.
func dnsblName(ip netip.Addr, zone string) string {
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d.%s", b[3], b[2], b[1], b[0], zone)
	}
	b := ip.As16()
	const hex = "0123456789abcdef"
	var s strings.Builder
	for i := 15; i >= 0; i-- {
		s.WriteByte(hex[b[i]&0xf])
		s.WriteByte('.')
		s.WriteByte(hex[b[i]>>4])
		s.WriteByte('.')
	}
	return s.String() + zone
}

// listHealth skips a zone that keeps failing, for a while.
type listHealth struct {
	mu       sync.Mutex
	failures map[string]int
	until    map[string]time.Time
}

const (
	listFailLimit = 5
	listSkipFor   = 5 * time.Minute
)

func (h *listHealth) skip(zone string, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(h.until[zone])
}

// result records a query outcome; it reports true when the zone has just
// been switched off.
func (h *listHealth) result(zone string, failed bool, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failures == nil {
		h.failures, h.until = map[string]int{}, map[string]time.Time{}
	}
	if !failed {
		h.failures[zone] = 0
		return false
	}
	h.failures[zone]++
	if h.failures[zone] >= listFailLimit {
		h.failures[zone] = 0
		h.until[zone] = now.Add(listSkipFor)
		return true
	}
	return false
}

// ipResolver is what the checks ask of DNS.
type ipResolver interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

// listing is one list's verdict on the client.
type listing struct {
	list   List
	listed bool
	code   string
	err    string
}

// dnsblCheck scores the lists' verdicts on the client.
type dnsblCheck struct{}

func (dnsblCheck) start(ctx context.Context, ev *evaluation) {
	done := make(chan []listing, 1)
	go func() { done <- ev.p.queryLists(ctx, ev.q.Client, ev.now) }()
	ev.lists = done
}

func (dnsblCheck) run(_ context.Context, ev *evaluation) *smtpreply.Reply {
	for _, l := range <-ev.lists {
		switch {
		case l.listed:
			what := "listed"
			if l.list.Weight < 0 {
				what = "allowlisted"
			}
			ev.note("dnsbl", l.list.Weight, fmt.Sprintf("%s on %s (%s)", what, l.list.Zone, l.code))
			if l.list.Weight > 0 {
				ev.listedOn = append(ev.listedOn, fmt.Sprintf("%s (%s)", l.list.Zone, l.code))
			}
		case l.err != "":
			ev.note("dnsbl", 0, l.list.Zone+": "+l.err)
		}
	}
	return nil
}

// queryLists asks every list in parallel.
func (p *Pipeline) queryLists(ctx context.Context, ip netip.Addr, now time.Time) []listing {
	out := make([]listing, len(p.cfg.DNSLists))
	var wg sync.WaitGroup
	for i, l := range p.cfg.DNSLists {
		out[i].list = l
		if p.health.skip(l.Zone, now) {
			out[i].err = "skipped: the zone kept failing"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ips, err := p.res.LookupIP(ctx, "ip4", dnsblName(ip, l.Zone))
			if err != nil {
				if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
					p.health.result(l.Zone, false, now)
					return
				}
				out[i].err = err.Error()
				if p.health.result(l.Zone, true, now) {
					p.log.Warn("policyd: DNS list keeps failing; skipped for a while", "zone", l.Zone, "for", listSkipFor, "error", err)
				}
				return
			}
			p.health.result(l.Zone, false, now)
			for _, a := range ips {
				addr, _ := netip.AddrFromSlice(a)
				addr = addr.Unmap()
				ok, why := l.listed(addr)
				if ok {
					out[i].listed, out[i].code = true, addr.String()
					return
				}
				out[i].err = why
			}
		}()
	}
	wg.Wait()
	return out
}
