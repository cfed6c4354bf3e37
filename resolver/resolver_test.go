package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wehr/wehr/resolver/dnstest"
)

const zone = `
example.org.       3600 IN SOA ns.example.org. host.example.org. 1 3600 600 86400 60
example.org.        300 IN TXT "v=spf1 -all"
example.org.        300 IN MX 10 mx.example.org.
mx.example.org.     120 IN A 192.0.2.1
mx.example.org.     300 IN AAAA 2001:db8::1
split.example.org.  300 IN TXT "v=spf1 " "ip4:192.0.2.0/24 " "-all"
alias.example.org.   30 IN CNAME mx.example.org.
1.2.0.192.in-addr.arpa. 300 IN PTR mx.example.org.
`

// clock is a settable fake time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newResolver(t *testing.T, srv *dnstest.Server, mod func(*Config)) (*Resolver, *clock) {
	t.Helper()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg := Config{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond, Attempts: 1, CacheSize: 10000, Now: clk.now}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, clk
}

func dnsErr(t *testing.T, err error) *net.DNSError {
	t.Helper()
	// Deliberately a type assertion, not errors.As: the SPF, DKIM and
	// DMARC libraries use exactly this, so a wrapped error would fail.
	de, ok := err.(*net.DNSError)
	if !ok {
		t.Fatalf("error %T %v is not a bare *net.DNSError", err, err)
	}
	return de
}

func TestLookups(t *testing.T) {
	srv := dnstest.New(t, zone)
	r, _ := newResolver(t, srv, nil)
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "split.example.org")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 ip4:192.0.2.0/24 -all" {
		t.Errorf("LookupTXT split = %q, %v", txt, err)
	}
	mx, err := r.LookupMX(ctx, "EXAMPLE.org")
	if err != nil || len(mx) != 1 || mx[0].Host != "mx.example.org." || mx[0].Pref != 10 {
		t.Errorf("LookupMX = %v, %v", mx, err)
	}
	ips, err := r.LookupIPAddr(ctx, "mx.example.org")
	if err != nil || len(ips) != 2 {
		t.Errorf("LookupIPAddr = %v, %v", ips, err)
	}
	// Again, from the cache (the two lookups then run in turn), and
	// again with the names' case changed (the cache keys fold it).
	for _, host := range []string{"mx.example.org", "MX.Example.ORG."} {
		again, err := r.LookupIPAddr(ctx, host)
		if err != nil || len(again) != 2 || !again[0].IP.Equal(ips[0].IP) || !again[1].IP.Equal(ips[1].IP) {
			t.Errorf("LookupIPAddr %s, cached = %v, %v; first %v", host, again, err, ips)
		}
	}
	txt2, err := r.LookupTXT(ctx, "Split.Example.org")
	if err != nil || len(txt2) != 1 || txt2[0] != txt[0] {
		t.Errorf("LookupTXT split, cached = %q, %v", txt2, err)
	}
	ips4, err := r.LookupIP(ctx, "ip4", "alias.example.org")
	if err != nil || len(ips4) != 1 || !ips4[0].Equal(net.ParseIP("192.0.2.1")) {
		t.Errorf("LookupIP via CNAME = %v, %v", ips4, err)
	}
	names, err := r.LookupAddr(ctx, "192.0.2.1")
	if err != nil || len(names) != 1 || names[0] != "mx.example.org." {
		t.Errorf("LookupAddr = %v, %v", names, err)
	}
}

func TestErrorMapping(t *testing.T) {
	srv := dnstest.New(t, zone+"\nslow.example.org. 300 IN TXT \"late\"\n")
	srv.ServFail("broken.example.org")
	srv.Refuse("refused.example.org")
	srv.Timeout("silent.example.org")
	srv.Delay("slow.example.org", 2*time.Second)
	r, _ := newResolver(t, srv, nil)
	ctx := context.Background()

	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		notFound  bool
		temporary bool
		timeout   bool
	}{
		{"nxdomain", "nope.example.org", dns.TypeTXT, true, false, false},
		{"nodata", "mx.example.org", dns.TypeTXT, true, false, false},
		{"servfail", "broken.example.org", dns.TypeTXT, false, true, false},
		{"refused", "refused.example.org", dns.TypeTXT, false, true, false},
		{"timeout", "silent.example.org", dns.TypeTXT, false, true, true},
		{"late answer", "slow.example.org", dns.TypeTXT, false, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Query(ctx, tc.qname, tc.qtype)
			de := dnsErr(t, err)
			if de.IsNotFound != tc.notFound || de.Temporary() != tc.temporary || de.IsTimeout != tc.timeout {
				t.Errorf("%v: IsNotFound=%v Temporary=%v IsTimeout=%v, want %v %v %v",
					err, de.IsNotFound, de.Temporary(), de.IsTimeout, tc.notFound, tc.temporary, tc.timeout)
			}
			if de.Name != tc.qname {
				t.Errorf("Name = %q, want %q", de.Name, tc.qname)
			}
		})
	}
}

func TestCacheTTL(t *testing.T) {
	srv := dnstest.New(t, zone)
	r, clk := newResolver(t, srv, nil)
	ctx := context.Background()

	lookup := func() {
		t.Helper()
		if _, err := r.LookupIP(ctx, "ip4", "mx.example.org"); err != nil {
			t.Fatal(err)
		}
	}
	lookup()
	lookup()
	if n := srv.QueryCount("mx.example.org", dns.TypeA); n != 1 {
		t.Fatalf("two lookups within TTL sent %d queries, want 1", n)
	}
	clk.add(119 * time.Second)
	lookup()
	if n := srv.QueryCount("mx.example.org", dns.TypeA); n != 1 {
		t.Fatalf("lookup at TTL-1s sent %d queries, want 1", n)
	}
	clk.add(time.Second)
	lookup()
	if n := srv.QueryCount("mx.example.org", dns.TypeA); n != 2 {
		t.Fatalf("lookup at TTL sent %d queries in all, want 2", n)
	}

	// A CNAME's TTL bounds the cached answer too.
	if _, err := r.LookupIP(ctx, "ip4", "alias.example.org"); err != nil {
		t.Fatal(err)
	}
	clk.add(31 * time.Second)
	if _, err := r.LookupIP(ctx, "ip4", "alias.example.org"); err != nil {
		t.Fatal(err)
	}
	if n := srv.QueryCount("alias.example.org", dns.TypeA); n != 2 {
		t.Fatalf("CNAME with TTL 30 still cached after 31s (%d queries)", n)
	}
}

func TestNegativeCache(t *testing.T) {
	srv := dnstest.New(t, zone+"\nnosoa.test. 300 IN TXT \"x\"\n")
	r, clk := newResolver(t, srv, nil)
	ctx := context.Background()

	for range 3 {
		if _, err := r.LookupTXT(ctx, "nope.example.org"); !dnsErr(t, err).IsNotFound {
			t.Fatalf("want not found, got %v", err)
		}
	}
	if n := srv.QueryCount("nope.example.org", dns.TypeTXT); n != 1 {
		t.Fatalf("NXDOMAIN asked %d times, want 1 (cached)", n)
	}
	// SOA minimum is 60 (TTL 3600): RFC 2308 takes the lesser.
	clk.add(59 * time.Second)
	r.LookupTXT(ctx, "nope.example.org") //nolint:errcheck
	if n := srv.QueryCount("nope.example.org", dns.TypeTXT); n != 1 {
		t.Fatalf("NXDOMAIN re-asked before the SOA minimum (%d)", n)
	}
	clk.add(time.Second)
	r.LookupTXT(ctx, "nope.example.org") //nolint:errcheck
	if n := srv.QueryCount("nope.example.org", dns.TypeTXT); n != 2 {
		t.Fatalf("NXDOMAIN not re-asked after the SOA minimum (%d)", n)
	}

	// NODATA is cached the same way.
	r.LookupMX(ctx, "mx.example.org") //nolint:errcheck
	r.LookupMX(ctx, "mx.example.org") //nolint:errcheck
	if n := srv.QueryCount("mx.example.org", dns.TypeMX); n != 1 {
		t.Fatalf("NODATA asked %d times, want 1", n)
	}

	// Without a SOA in the answer, nothing is cached (RFC 2308 5).
	r.LookupMX(ctx, "nosoa.test") //nolint:errcheck
	r.LookupMX(ctx, "nosoa.test") //nolint:errcheck
	if n := srv.QueryCount("nosoa.test", dns.TypeMX); n != 2 {
		t.Fatalf("negative answer without SOA cached (%d queries)", n)
	}

	// Temporary failures are never cached.
	srv.ServFail("flaky.example.org")
	r.LookupTXT(ctx, "flaky.example.org") //nolint:errcheck
	r.LookupTXT(ctx, "flaky.example.org") //nolint:errcheck
	if n := srv.QueryCount("flaky.example.org", dns.TypeTXT); n != 2 {
		t.Fatalf("SERVFAIL cached (%d queries)", n)
	}
}

func TestCacheSizeCap(t *testing.T) {
	var z strings.Builder
	for i := range 50 {
		fmt.Fprintf(&z, "h%d.example.org. 300 IN A 192.0.2.%d\n", i, i)
	}
	srv := dnstest.New(t, z.String())
	r, _ := newResolver(t, srv, func(c *Config) { c.CacheSize = 10 })
	for i := range 50 {
		if _, err := r.LookupIP(context.Background(), "ip4", fmt.Sprintf("h%d.example.org", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.CacheLen(); n != 10 {
		t.Fatalf("cache holds %d entries, cap is 10", n)
	}
	// The most recent ones are kept.
	r.LookupIP(context.Background(), "ip4", "h49.example.org") //nolint:errcheck
	if n := srv.QueryCount("h49.example.org", dns.TypeA); n != 1 {
		t.Fatalf("most recent entry was evicted")
	}
}

// A view with a cache of its own (WithCache): its long tail of names
// never evicts the shared cache's answers, it keeps its own within its
// bound, and both count in one Stats.
func TestWithCache(t *testing.T) {
	var z strings.Builder
	for i := range 50 {
		fmt.Fprintf(&z, "h%d.example.org. 300 IN A 192.0.2.%d\n", i, i)
	}
	srv := dnstest.New(t, z.String())
	ctx := context.Background()
	r, _ := newResolver(t, srv, func(c *Config) { c.CacheSize = 10 })
	if _, err := r.LookupIP(ctx, "ip4", "h0.example.org"); err != nil {
		t.Fatal(err)
	}
	v := r.WithCache(5)
	for i := 1; i < 50; i++ {
		if _, err := v.LookupIP(ctx, "ip4", fmt.Sprintf("h%d.example.org", i)); err != nil {
			t.Fatal(err)
		}
	}
	if r.CacheLen() != 1 || v.CacheLen() != 5 {
		t.Errorf("shared cache %d entries, the view's %d", r.CacheLen(), v.CacheLen())
	}
	r.LookupIP(ctx, "ip4", "h0.example.org")  //nolint:errcheck
	v.LookupIP(ctx, "ip4", "h49.example.org") //nolint:errcheck
	if srv.QueryCount("h0.example.org", dns.TypeA) != 1 || srv.QueryCount("h49.example.org", dns.TypeA) != 1 {
		t.Error("an answer was asked for twice")
	}
	if st := r.Stats(); st.Lookups != 52 || st.CacheHits != 2 || v.Stats() != st {
		t.Errorf("stats %+v, the view's %+v", st, v.Stats())
	}
	// No cache at all: every lookup asks.
	none := r.WithCache(0)
	none.LookupIP(ctx, "ip4", "h1.example.org") //nolint:errcheck
	none.LookupIP(ctx, "ip4", "h1.example.org") //nolint:errcheck
	if n := srv.QueryCount("h1.example.org", dns.TypeA); n != 3 {
		t.Errorf("h1 asked %d times, want 3", n)
	}
}

func TestTruncationRetriesOverTCP(t *testing.T) {
	var z strings.Builder
	for i := range 40 {
		fmt.Fprintf(&z, "big.example.org. 300 IN TXT \"record number %d padded out to make the answer far larger than a UDP buffer of 1232 bytes\"\n", i)
	}
	srv := dnstest.New(t, z.String())
	r, _ := newResolver(t, srv, nil)
	txt, err := r.LookupTXT(context.Background(), "big.example.org")
	if err != nil {
		t.Fatal(err)
	}
	if len(txt) != 40 {
		t.Fatalf("got %d records, want all 40", len(txt))
	}
	if srv.TCPQueries() != 1 || r.Stats().TCPRetry != 1 {
		t.Fatalf("TCP queries = %d, retries = %d, want 1 and 1", srv.TCPQueries(), r.Stats().TCPRetry)
	}
}

// Issue 10.12: TC set over TCP too is a temporary failure, not an empty
// answer (and not cached as one).
func TestTruncatedOverTCPIsTemporary(t *testing.T) {
	srv := dnstest.New(t, "sel._domainkey.example.org. 300 IN TXT \"v=DKIM1; p=abc\"\n")
	srv.TruncateTCP("sel._domainkey.example.org")
	r, _ := newResolver(t, srv, nil)
	for range 2 {
		_, err := r.LookupTXT(context.Background(), "sel._domainkey.example.org")
		if de := dnsErr(t, err); !de.Temporary() || de.IsNotFound {
			t.Fatalf("%v: want a temporary error", err)
		}
	}
	if srv.TCPQueries() < 2 {
		t.Errorf("%d TCP queries: the failure was cached", srv.TCPQueries())
	}
}

func TestCoalescing(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.Delay("example.org", 200*time.Millisecond)
	r, _ := newResolver(t, srv, func(c *Config) { c.Timeout = 2 * time.Second })
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txt, err := r.LookupTXT(context.Background(), "example.org")
			if err == nil && (len(txt) != 1 || txt[0] != "v=spf1 -all") {
				err = fmt.Errorf("got %q", txt)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.QueryCount("example.org", dns.TypeTXT); n != 1 {
		t.Fatalf("50 concurrent lookups sent %d queries, want 1", n)
	}
	if s := r.Stats(); s.Coalesced+s.CacheHits != 49 {
		t.Fatalf("stats %+v: want 49 coalesced or cached", s)
	}
}

func TestDeadlineHonoured(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.Timeout("example.org")
	r, _ := newResolver(t, srv, func(c *Config) { c.Timeout = 5 * time.Second; c.Attempts = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.LookupTXT(ctx, "example.org")
	elapsed := time.Since(start)
	de := dnsErr(t, err)
	if !de.IsTimeout || !de.Temporary() {
		t.Fatalf("want a timeout, got %v", err)
	}
	// Generous bound: the point is that 150ms is not 15s.
	if elapsed > 2*time.Second {
		t.Fatalf("lookup took %v with a 150ms deadline", elapsed)
	}
	// A context that is already done never reaches the network.
	before := srv.Queries()
	_, err = r.LookupTXT(ctx, "other.example.org")
	if !dnsErr(t, err).IsTimeout || srv.Queries() != before {
		t.Fatalf("expired context: err %v, queries %d→%d", err, before, srv.Queries())
	}
}

func TestFailover(t *testing.T) {
	dead := dnstest.New(t, "")
	dead.ServFail("example.org")
	good := dnstest.New(t, zone)
	r, err := New(Config{Servers: []string{dead.Addr(), good.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	txt, err := r.LookupTXT(context.Background(), "example.org")
	if err != nil || len(txt) != 1 {
		t.Fatalf("second server not asked after SERVFAIL: %q %v", txt, err)
	}
}

// mismatch answers every query with a record for another name.
type mismatch struct{}

func (mismatch) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Question[0].Name = "evil.example."
	rr, _ := dns.NewRR(`evil.example. 300 IN TXT "v=spf1 +all"`)
	m.Answer = []dns.RR{rr}
	w.WriteMsg(m) //nolint:errcheck
}

func TestQuestionChecked(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: mismatch{}}
	go s.ActivateAndServe() //nolint:errcheck
	defer s.Shutdown()      //nolint:errcheck
	r, err := New(Config{Servers: []string{pc.LocalAddr().String()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.LookupTXT(context.Background(), "example.org")
	if de := dnsErr(t, err); !de.Temporary() || !strings.Contains(de.Err, "question") {
		t.Fatalf("answer to another question accepted: %v", err)
	}
	if r.CacheLen() != 0 {
		t.Fatal("mismatched answer was cached")
	}
}

func TestNormalizeServer(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"192.0.2.53", "192.0.2.53:53", ""},
		{"192.0.2.53:5353", "192.0.2.53:5353", ""},
		{"2001:db8::53", "[2001:db8::53]:53", ""},
		{"[2001:db8::53]:5353", "[2001:db8::53]:5353", ""},
		{"dns.example.org:53", "", "IP address"},
		{"192.0.2.53:0", "", "bad port"},
	}
	for _, tc := range tests {
		got, err := NormalizeServer(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/resolv.conf"
	writeFile(t, path, "# comment\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions edns0\n")
	got, err := ServersFromResolvConf(path)
	if err != nil || len(got) != 2 || got[0] != "192.0.2.53:53" || got[1] != "[2001:db8::53]:53" {
		t.Fatalf("got %v, %v", got, err)
	}
	writeFile(t, path, "search example.org\n")
	if _, err := ServersFromResolvConf(path); err == nil {
		t.Fatal("resolv.conf without nameserver accepted")
	}
	if _, err := ServersFromResolvConf(dir + "/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestExists(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.ServFail("broken.example.org")
	r, _ := newResolver(t, srv, nil)
	ctx := context.Background()
	tests := []struct {
		name   string
		exists bool
		err    bool
	}{
		{"example.org", true, false},       // data
		{"mx.example.org", true, false},    // A present
		{"split.example.org", true, false}, // NODATA for A: exists
		{"nope.example.org", false, false},
		{"broken.example.org", false, true},
	}
	for _, tc := range tests {
		got, err := r.Exists(ctx, tc.name)
		if got != tc.exists || (err != nil) != tc.err {
			t.Errorf("Exists(%s) = %v, %v; want %v, err %v", tc.name, got, err, tc.exists, tc.err)
		}
	}
}

// Unanswered, failing and cancelled queries give their sockets back
// (OpenDKIM's hanging UDP sockets ran it out of descriptors).
func TestNoSocketLeak(t *testing.T) {
	srv := dnstest.New(t, zone)
	srv.Timeout("slow.example.org")
	srv.ServFail("broken.example.org")
	r, _ := newResolver(t, srv, func(c *Config) { c.Timeout = 30 * time.Millisecond; c.Attempts = 2; c.CacheSize = -1 })
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	run := func() {
		var wg sync.WaitGroup
		for i := range 300 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%40)*time.Millisecond)
				defer cancel()
				switch i % 3 {
				case 0:
					r.LookupTXT(ctx, "slow.example.org")
				case 1:
					r.LookupTXT(ctx, "broken.example.org")
				default:
					r.LookupTXT(ctx, fmt.Sprintf("n%d.example.org", i))
				}
			}()
		}
		wg.Wait()
	}
	run() // warm up whatever the runtime keeps open
	before := fds()
	for range 3 {
		run()
	}
	// Sockets closed by other goroutines may take a moment to go.
	after := fds()
	for end := time.Now().Add(3 * time.Second); after > before+5 && time.Now().Before(end); after = fds() {
		time.Sleep(50 * time.Millisecond)
	}
	if after > before+5 {
		t.Fatalf("open descriptors %d → %d after 900 lookups", before, after)
	}
}

// A server that answers with garbage gives a temporary error (never a
// permanent one, never a panic) and nothing is cached.
func TestGarbageAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(q []byte) []byte
	}{
		{"random bytes", func([]byte) []byte { return []byte("\x13\x37garbage that is not DNS") }},
		{"header only", func(q []byte) []byte { return append(q[:2:2], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0) }},
		{"answer count beyond the packet", func(q []byte) []byte {
			r := append([]byte(nil), q...)
			r[2], r[3] = 0x81, 0x80
			r[6], r[7] = 0x00, 0x09
			return r
		}},
		{"compression loop", func(q []byte) []byte {
			r := append([]byte(nil), q...)
			r[2], r[3] = 0x81, 0x80
			r[7] = 1
			return append(r, 0xc0, byte(len(r)), 0, 16, 0, 1, 0, 0, 1, 0, 0, 1, 'x')
		}},
		{"wrong id", func(q []byte) []byte {
			r := append([]byte(nil), q...)
			r[0] ^= 0xff
			r[2], r[3] = 0x81, 0x80
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, func(q []byte) [][]byte { return [][]byte{tc.reply(q)} })
			r, err := New(Config{Servers: []string{addr}, Timeout: 200 * time.Millisecond, Attempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.LookupTXT(context.Background(), "example.org")
			if de := dnsErr(t, err); !de.Temporary() || de.IsNotFound {
				t.Fatalf("garbage answer gave %+v, want a temporary error", de)
			}
			if r.CacheLen() != 0 {
				t.Fatal("garbage was cached")
			}
		})
	}
}

// Over UDP, datagrams that are not the answer (junk, another ID) are
// skipped and the real answer that follows is taken.
func TestJunkBeforeAnswer(t *testing.T) {
	addr := rawServer(t, func(query []byte) [][]byte {
		q := new(dns.Msg)
		if q.Unpack(query) != nil {
			return nil
		}
		a := new(dns.Msg)
		a.SetReply(q)
		a.Answer = append(a.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"v=spf1 -all"}})
		out, _ := a.Pack()
		other := append([]byte(nil), out...)
		other[0] ^= 0xff
		return [][]byte{[]byte("junk"), other, out}
	})
	r, err := New(Config{Servers: []string{addr}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	txts, err := r.LookupTXT(context.Background(), "example.org")
	if err != nil || len(txts) != 1 || txts[0] != "v=spf1 -all" {
		t.Fatalf("got %q, %v", txts, err)
	}
}

// rawServer answers every UDP query with the datagrams reply makes of it,
// for answers no well-behaved server would send. It returns the address.
func rawServer(tb testing.TB, reply func(query []byte) [][]byte) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, d := range reply(buf[:n]) {
				pc.WriteTo(d, addr) //nolint:errcheck
			}
		}
	}()
	return pc.LocalAddr().String()
}

// TestLookupSecure: MX and TLSA answers carry whether the server
// vouched for them (the AD bit of a validating resolver); others are
// not asked that way, and a server that does not validate vouches for
// nothing.
func TestLookupSecure(t *testing.T) {
	srv := dnstest.New(t, zone+"_25._tcp.mx.example.org. 300 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n")
	ctx := context.Background()
	r, _ := newResolver(t, srv, nil)
	if rrs, secure, err := r.LookupSecure(ctx, "example.org", dns.TypeMX); err != nil || len(rrs) != 1 || secure {
		t.Errorf("not validating: %v %v %v", rrs, secure, err)
	}
	srv.Validating(true)
	r, _ = newResolver(t, srv, nil) // a fresh cache
	if rrs, secure, err := r.LookupSecure(ctx, "_25._tcp.mx.example.org", dns.TypeTLSA); err != nil || len(rrs) != 1 || !secure {
		t.Errorf("validating, TLSA: %v %v %v", rrs, secure, err)
	}
	if _, secure, _ := r.LookupSecure(ctx, "example.org", dns.TypeMX); !secure {
		t.Error("validating, MX: not secure")
	}
	if _, secure, err := r.LookupSecure(ctx, "_25._tcp.nothing.example.org", dns.TypeTLSA); err == nil || !secure {
		t.Errorf("validated denial: %v %v", secure, err)
	}
	if _, _, err := r.LookupSecure(ctx, "example.org", dns.TypeTXT); err == nil {
		t.Error("TXT asked as secure")
	}
}

func TestCacheName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"example.org.", "example.org."},
		{"example.org", "example.org."},
		{"Mail.Example.ORG", "mail.example.org."},
		{"_dmarc.EXAMPLE.org.", "_dmarc.example.org."},
		{"ex\\.", "ex\\.."},                       // an escaped dot does not end the name
		{"\xc3\x84.example", "\xc3\x84.example."}, // only ASCII letters fold (RFC 4343)
	} {
		if got := cacheName(tc.in); got != tc.want {
			t.Errorf("cacheName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Names that need no change are not copied.
	if n := testing.AllocsPerRun(100, func() { cacheName("mail.example.org.") }); n != 0 {
		t.Errorf("%v allocations for a canonical name", n)
	}
}
