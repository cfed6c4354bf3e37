// Package dnstest is an in-process authoritative DNS server for tests.
//
// It serves zone text (RFC 1035 master-file syntax) over UDP and TCP on one
// loopback port, and can make chosen names answer SERVFAIL, answer late or
// not answer at all. It counts the queries it receives, so tests can check
// caching and query coalescing. No test in wehr touches the internet: every
// lookup goes to one of these servers.
package dnstest

import (
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Server is a running test DNS server. It is safe for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu       sync.Mutex
	rrs      map[string][]dns.RR // lower-case FQDN → records
	servfail map[string]bool
	refused  map[string]bool
	tcTCP    map[string]bool
	delay    map[string]time.Duration
	timeout  map[string]map[uint16]bool // name → answered types; a name present here times out for other types
	queries  map[string]int             // "name/TYPE" → count
	total    int
	tcpCount int
	// validating: answer like a validating resolver (Validating).
	validating bool
	closeMu    sync.Once
}

// Start starts a server on 127.0.0.1 with an ephemeral port, serving the
// records in zone (master-file text; the default origin is the root, so
// names should be fully qualified; blank zone is allowed).
func Start(zone string) (*Server, error) { return StartAt("127.0.0.1:0", zone) }

// StartAt starts a server on a given address (UDP and TCP).
func StartAt(addr, zone string) (*Server, error) {
	s := &Server{
		rrs:      map[string][]dns.RR{},
		servfail: map[string]bool{},
		refused:  map[string]bool{},
		tcTCP:    map[string]bool{},
		delay:    map[string]time.Duration{},
		timeout:  map[string]map[uint16]bool{},
		queries:  map[string]int{},
	}
	if err := s.AddZone(zone); err != nil {
		return nil, err
	}
	// UDP and TCP on the same port: with an ephemeral port, the TCP side
	// may be taken by some connection already; try other ports then.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, fmt.Errorf("dnstest: listen udp: %w", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if !strings.HasSuffix(addr, ":0") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dnstest: listen tcp: %w", err)
	}
	s.addr = pc.LocalAddr().String()
	var wg sync.WaitGroup
	wg.Add(2)
	started := func() { wg.Done() }
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: started}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: started}
	go s.udp.ActivateAndServe() //nolint:errcheck // returns on Shutdown
	go s.tcp.ActivateAndServe() //nolint:errcheck
	wg.Wait()
	return s, nil
}

// TB is the part of testing.TB that New needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// New starts a server for a test and stops it when the test ends.
func New(t TB, zone string) *Server {
	t.Helper()
	s, err := Start(zone)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Addr is the server's HOST:PORT, for resolver configuration and the
// --resolver flag.
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() {
	s.closeMu.Do(func() {
		s.udp.Shutdown() //nolint:errcheck
		s.tcp.Shutdown() //nolint:errcheck
	})
}

// AddZone adds the records in zone text to the served data.
func (s *Server) AddZone(zone string) error {
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "")
	zp.SetDefaultTTL(300)
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("dnstest: zone: %w", err)
	}
	s.Add(rrs...)
	return nil
}

// AddRR parses one record in master-file syntax and serves it.
func (s *Server) AddRR(text string) error {
	rr, err := dns.NewRR(text)
	if err != nil {
		return fmt.Errorf("dnstest: record %q: %w", text, err)
	}
	if rr == nil {
		return fmt.Errorf("dnstest: record %q: empty", text)
	}
	s.Add(rr)
	return nil
}

// Add serves rrs in addition to what is served already.
func (s *Server) Add(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		name := key(rr.Header().Name)
		s.rrs[name] = append(s.rrs[name], rr)
	}
}

// Remove stops serving every record of type qtype at name (dns.TypeANY:
// all records).
func (s *Server) Remove(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = key(name)
	var keep []dns.RR
	for _, rr := range s.rrs[name] {
		if qtype != dns.TypeANY && rr.Header().Rrtype != qtype {
			keep = append(keep, rr)
		}
	}
	if len(keep) == 0 {
		delete(s.rrs, name)
	} else {
		s.rrs[name] = keep
	}
}

// AddTXT serves one TXT record at name holding value, split into
// character-strings of at most 255 bytes; value is raw text (quotes,
// backslashes and non-ASCII bytes are served as they are).
func (s *Server) AddTXT(name, value string) {
	s.Add(&dns.TXT{
		Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300},
		Txt: TXTStrings(value),
	})
}

// TXTStrings splits raw text into the character-strings of a TXT record,
// in the escaped form miekg/dns packs.
func TXTStrings(value string) []string {
	var out []string
	var cur strings.Builder
	n := 0
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\\' || c == '"' {
			cur.WriteByte('\\')
		}
		cur.WriteByte(c)
		n++
		if n == 255 {
			out = append(out, cur.String())
			cur.Reset()
			n = 0
		}
	}
	if cur.Len() > 0 || len(out) == 0 {
		out = append(out, cur.String())
	}
	return out
}

// ServFail makes every query for name answer SERVFAIL.
func (s *Server) ServFail(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servfail[key(name)] = true
}

// Heal undoes ServFail, Refuse, Delay and Timeout for name: its
// records are answered normally again.
func (s *Server) Heal(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(name)
	delete(s.servfail, k)
	delete(s.refused, k)
	delete(s.delay, k)
	delete(s.timeout, k)
}

// Refuse makes every query for name answer REFUSED.
func (s *Server) Refuse(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused[key(name)] = true
}

// TruncateTCP makes every answer for name, over TCP too, come with TC
// set and no records: a broken server or middlebox.
func (s *Server) TruncateTCP(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tcTCP[key(name)] = true
}

// Delay makes every answer for name wait d before it is sent.
func (s *Server) Delay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay[key(name)] = d
}

// Timeout makes queries for name go unanswered, except queries for the
// record types in answered, which are answered normally.
func (s *Server) Timeout(name string, answered ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[uint16]bool{}
	for _, t := range answered {
		m[t] = true
	}
	s.timeout[key(name)] = m
}

// Queries is the number of queries received so far, over UDP and TCP.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// TCPQueries is the number of queries received over TCP.
func (s *Server) TCPQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcpCount
}

// QueryCount is the number of queries received for name and qtype.
func (s *Server) QueryCount(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key(name)+"/"+dns.TypeToString[qtype]]
}

// QueryLog lists "name/TYPE count" for every name queried, sorted.
func (s *Server) QueryLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, n := range s.queries {
		out = append(out, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(out)
	return out
}

// key is the lower-case presentation form of name, with the escapes the
// library uses when it unpacks a question (names may hold spaces and
// other bytes SPF macros produce).
func key(name string) string {
	name = dns.Fqdn(name)
	var buf [256]byte
	if n, err := dns.PackDomainName(name, buf[:], 0, nil, false); err == nil {
		if p, _, err := dns.UnpackDomainName(buf[:n], 0); err == nil {
			name = p
		}
	}
	return strings.ToLower(name)
}

// Validating makes the server answer as a validating resolver would
// answer for a signed zone: every answer to a query with the DO bit
// carries the AD bit. Programs that trust their resolver's AD bit
// (Postfix's DANE, glibc with "options trust-ad") then take the data as
// DNSSEC-validated.
func (s *Server) Validating(on bool) {
	s.mu.Lock()
	s.validating = on
	s.mu.Unlock()
}

// ServeDNS answers one query. It implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if len(r.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeFormatError)
		w.WriteMsg(m) //nolint:errcheck
		return
	}
	q := r.Question[0]
	name := key(q.Name)
	tcp := w.RemoteAddr().Network() == "tcp"

	s.mu.Lock()
	s.total++
	if tcp {
		s.tcpCount++
	}
	s.queries[name+"/"+dns.TypeToString[q.Qtype]]++
	delay := s.delay[name]
	answered, times := s.timeout[name]
	servfail, refused, tc := s.servfail[name], s.refused[name], s.tcTCP[name]
	m := s.answer(r, q, name)
	validating := s.validating
	s.mu.Unlock()
	if o := r.IsEdns0(); validating && o != nil && o.Do() {
		// What a validating resolver says of data it validated: the
		// AD bit (RFC 4035 3.2.3), to a client that asked with DO.
		m.AuthenticatedData, m.RecursionAvailable = true, true
		m.SetEdns0(o.UDPSize(), true)
	}

	if times && !answered[q.Qtype] {
		return // no answer: the client times out
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	switch {
	case servfail:
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeServerFailure)
	case refused:
		m = new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
	case tc:
		m = new(dns.Msg)
		m.SetReply(r)
		m.Truncated = true
	}
	if !tcp {
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m) //nolint:errcheck
}

// answer builds the authoritative answer; s.mu is held.
func (s *Server) answer(r *dns.Msg, q dns.Question, name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	// Follow CNAMEs inside the served data, as a recursive resolver would
	// hand them to a stub.
	for range 8 {
		rrs := s.rrs[name]
		var cname *dns.CNAME
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > 0 || cname == nil || q.Qtype == dns.TypeCNAME {
			break
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = key(cname.Target)
	}
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == q.Qtype {
			return m
		}
	}
	if !s.exists(name) {
		m.Rcode = dns.RcodeNameError
	}
	// RFC 2308 3: negative answers carry the zone's SOA in the authority
	// section; without one a resolver does not cache them.
	if soa := s.soaFor(name); soa != nil {
		m.Ns = append(m.Ns, dns.Copy(soa))
	}
	return m
}

// exists reports whether name has records or is an empty non-terminal.
func (s *Server) exists(name string) bool {
	if len(s.rrs[name]) > 0 {
		return true
	}
	for n := range s.rrs {
		if strings.HasSuffix(n, "."+name) || name == "." {
			return true
		}
	}
	return false
}

// soaFor finds the SOA of the closest enclosing zone of name.
func (s *Server) soaFor(name string) dns.RR {
	for n := name; ; {
		for _, rr := range s.rrs[n] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return rr
			}
		}
		if n == "." {
			return nil
		}
		i := strings.IndexByte(n, '.')
		n = n[i+1:]
		if n == "" {
			n = "."
		}
	}
}
