package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/store"
)

func TestReadRequest(t *testing.T) {
	good := "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nsender=a=b@example.org\n\n"
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(good + good)))
	if err != nil || req.Get("client_address") != "192.0.2.1" || req.Get("sender") != "a=b@example.org" {
		t.Fatalf("%v %v", req, err)
	}
	bad := []struct{ name, in string }{
		{"no equals", "request=smtpd_access_policy\ngarbage\n\n"},
		{"empty request", "\n"},
		{"cut short", "request=smtpd_access_policy\n"},
		{"long line", "x=" + strings.Repeat("a", maxLine+10) + "\n\n"},
		{"too big", strings.Repeat("name=value-with-some-length-to-it\n", maxRequest/30) + "\n"},
		{"too many", func() string {
			var b strings.Builder
			for i := range maxAttributes + 1 {
				fmt.Fprintf(&b, "a%d=1\n", i)
			}
			return b.String() + "\n"
		}()},
		{"empty name", "=value\n\n"},
	}
	for _, tc := range bad {
		if _, err := ReadRequest(bufio.NewReader(strings.NewReader(tc.in))); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := ReadRequest(bufio.NewReader(strings.NewReader(""))); err != io.EOF {
		t.Errorf("clean close: %v", err)
	}
}

func TestNormalizeSender(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Alice@Example.ORG", "alice@example.org"},
		{"prvs=1234abcd=bounce@example.org", "bounce@example.org"},
		{"SRS0=HHH=TT=orig.example=alice@forwarder.example", "alice@orig.example"},
		{"bounce-12345-67@lists.example.net", "bounce-#-#@lists.example.net"},
		{"1a22b333@example.net", "#a#b#@example.net"},
		{"SRS0=HHH=TT=orig.example=a12@forwarder.example", "a#@orig.example"},
		{"no-digits@example.net", "no-digits@example.net"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := NormalizeSender(tc.in); got != tc.want {
			t.Errorf("NormalizeSender(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDNSBLName(t *testing.T) {
	if got := dnsblName(netip.MustParseAddr("192.0.2.1"), "zen.example"); got != "1.2.0.192.zen.example" {
		t.Error(got)
	}
	if got := dnsblName(netip.MustParseAddr("2001:db8::1"), "l.example"); !strings.HasPrefix(got, "1.0.0.0.") || !strings.HasSuffix(got, ".8.b.d.0.1.0.0.2.l.example") {
		t.Error(got)
	}
}

func TestLooksDynamic(t *testing.T) {
	for name, want := range map[string]bool{
		"dyn-192-0-2-1.isp.example":     true,
		"192-0-2-1.dsl.isp.example":     true,
		"host-1.2.3.4.pool.isp.example": true,
		"ppp123.isp.example":            true,
		"cpe-1-2-3-4.cable.example":     true,
		"mail.example.org":              false,
		"mx1.provider.example":          false,
		"static-1-2-3-4.isp.example":    false,
		"smtp-out.bigsender.example":    false,
		"web01.hosting.example":         false,
	} {
		if got := looksDynamic(name); got != want {
			t.Errorf("looksDynamic(%s) = %v, want %v", name, got, want)
		}
	}
}

// The world of the pipeline tests, in the test DNS:
//
//	192.0.2.10   mail.good.example, confirmed: clean
//	192.0.2.20   listed on bl.test (127.0.0.2)
//	192.0.2.21   bl.test answers 127.255.255.254 (an error code)
//	192.0.2.22   bl.test answers 10.0.0.1 (outside 127/8)
//	192.0.2.30   no reverse DNS: suspicious
//	192.0.2.40   dyn-192-0-2-40.isp.example, confirmed: suspicious
//	192.0.2.50   on the allowlist wl.test, no reverse DNS
const zone = `
10.2.0.192.in-addr.arpa.  300 IN PTR mail.good.example.
mail.good.example.        300 IN A   192.0.2.10
20.2.0.192.bl.test.       300 IN A   127.0.0.2
20.100.51.198.bl.test.    300 IN A   127.0.0.2
21.2.0.192.bl.test.       300 IN A   127.255.255.254
22.2.0.192.bl.test.       300 IN A   10.0.0.1
40.2.0.192.in-addr.arpa.  300 IN PTR dyn-192-0-2-40.isp.example.
dyn-192-0-2-40.isp.example. 300 IN A 192.0.2.40
50.2.0.192.wl.test.       300 IN A   127.0.0.2
bigsender.example.        300 IN TXT "v=spf1 ip4:192.0.2.30 -all"
`

type fixture struct {
	p   *Pipeline
	st  store.Store
	now time.Time
	srv *dnstest.Server
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	srv := dnstest.New(t, zone)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := Config{
		Hostname: "mx1.example.test", LocalDomains: []string{"example.test"},
		DNSLists: []List{{Zone: "bl.test", Weight: 5}, {Zone: "wl.test", Weight: -5}},
		Weights:  Weights{HeloInvalid: 1, HeloClaimsUs: 4, NoFCrDNS: 1, Dynamic: 1, BadReputation: 1},
		Greylist: Greylisting{Enabled: true, Delay: 5 * time.Minute, Window: 4 * time.Hour, Keep: 30 * 24 * time.Hour, AllowlistAfter: 3,
			SPFDomains: []string{"bigsender.example"}},
		ReferenceURL: "https://mx.example.test/refused",
	}
	if mod != nil {
		mod(&cfg)
	}
	f := &fixture{st: st, now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), srv: srv}
	f.p = NewPipeline(cfg, res, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.p.now = func() time.Time { return f.now }
	return f
}

func rcptReq(ip, helo, sender, rcpt string) Request {
	return Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": ip, "helo_name": helo,
		"sender": sender, "recipient": rcpt, "instance": "1a2b.3c"}
}

func TestPipeline(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	tests := []struct {
		name   string
		req    Request
		action string // prefix
		check  string
	}{
		{"clean client", rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "alice@example.test"), "DUNNO", ""},
		{"listed", rcptReq("192.0.2.20", "mail.x.example", "a@x.example", "alice@example.test"),
			"554 5.7.1 Service unavailable; client [192.0.2.20] is listed on bl.test (127.0.0.2); see https://mx.example.test/refused", "dnsbl"},
		{"error code is no listing", rcptReq("192.0.2.21", "mail.x.example", "a@x.example", "alice@example.test"), "450 4.7.1 Greylisted", "greylist"},
		{"answer outside 127/8 is no listing", rcptReq("192.0.2.22", "mail.x.example", "a@x.example", "alice@example.test"), "450 4.7.1 Greylisted", "greylist"},
		{"no rDNS: greylisted", rcptReq("192.0.2.30", "mail.x.example", "a@x.example", "alice@example.test"), "450 4.7.1 Greylisted: please retry in 300 seconds", "greylist"},
		{"dynamic name: greylisted", rcptReq("192.0.2.40", "home.example", "a@x.example", "alice@example.test"), "450 4.7.1 Greylisted", "greylist"},
		{"allowlisted outweighs", rcptReq("192.0.2.50", "mail.y.example", "a@y.example", "alice@example.test"), "DUNNO", ""},
		{"HELO claims to be us, no rDNS: refused", rcptReq("192.0.2.30", "mx1.example.test", "a@x.example", "bob@example.test"), "554 5.7.1 Service unavailable; client [192.0.2.30] is refused: HELO claims", "score"},
		{"postmaster is exempt", rcptReq("192.0.2.20", "x", "a@x.example", "postmaster@example.test"), "DUNNO", ""},
		{"submission is not checked", func() Request {
			r := rcptReq("192.0.2.20", "x", "a@x.example", "bob@example.org")
			r["sasl_username"] = "alice"
			return r
		}(), "DUNNO", ""},
		// Issue 12.1: a listed, suspicious client that logged in is not
		// refused by the MX checks, whatever the context says.
		{"no MX checks with SASL, even in policy_context mx", func() Request {
			r := rcptReq("192.0.2.20", "x", "a@x.example", "bob@example.test")
			r["sasl_username"], r["policy_context"] = "alice", "mx"
			return r
		}(), "DUNNO", ""},
		{"no MX checks with SASL in an unknown context", func() Request {
			r := rcptReq("192.0.2.30", "laptop", "a@x.example", "bob@example.test")
			r["sasl_username"], r["policy_context"] = "alice", "port587"
			return r
		}(), "DUNNO", ""},
		{"SPF-allowlisted sender domain not greylisted", rcptReq("192.0.2.30", "mta.bigsender.example", "bounce@bigsender.example", "alice@example.test"), "DUNNO", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := f.p.Evaluate(ctx, tc.req)
			if !strings.HasPrefix(d.Action, tc.action) || d.Check != tc.check {
				t.Fatalf("%q (check %q), want %q (check %q); %+v", d.Action, d.Check, tc.action, tc.check, d.Contributions)
			}
			if d.Reply != nil && d.Reply.Valid() != nil {
				t.Fatalf("invalid reply %+v", d.Reply)
			}
		})
	}
}

func TestGreylistFlow(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	req := rcptReq("192.0.2.30", "mail.x.example", "prvs=1111aaaa=bounce@x.example", "alice@example.test")
	if d := f.p.Evaluate(ctx, req); !strings.HasPrefix(d.Action, "450 4.7.1 Greylisted: please retry in 300 seconds") {
		t.Fatalf("first: %s", d.Action)
	}
	f.now = f.now.Add(2 * time.Minute)
	if d := f.p.Evaluate(ctx, req); d.Action != "450 4.7.1 Greylisted: please retry in 180 seconds" {
		t.Fatalf("early retry: %s", d.Action)
	}
	// The retry comes with another BATV tag and from another address of
	// the same /24: the same triplet.
	f.now = f.now.Add(4 * time.Minute)
	req2 := rcptReq("192.0.2.31", "mail.x.example", "prvs=2222bbbb=bounce@x.example", "alice@example.test")
	if d := f.p.Evaluate(ctx, req2); d.Action != "DUNNO" {
		t.Fatalf("retry after the delay: %s %+v", d.Action, d.Contributions)
	}
	// After three passes the network is allowlisted.
	for i, rcpt := range []string{"bob@example.test", "carol@example.test"} {
		r := rcptReq("192.0.2.30", "mail.x.example", "bounce@x.example", rcpt)
		f.p.Evaluate(ctx, r)
		f.now = f.now.Add(6 * time.Minute)
		if d := f.p.Evaluate(ctx, r); d.Action != "DUNNO" {
			t.Fatalf("pass %d: %s", i+2, d.Action)
		}
	}
	if d := f.p.Evaluate(ctx, rcptReq("192.0.2.30", "mail.x.example", "new@x.example", "dave@example.test")); d.Action != "DUNNO" {
		t.Fatalf("allowlisted network greylisted again: %s", d.Action)
	}
}

func TestRates(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Rates.RecipientsPerIP = 3; c.Rates.Window = time.Minute })
	ctx := context.Background()
	for i := range 3 {
		if d := f.p.Evaluate(ctx, rcptReq("192.0.2.10", "mail.good.example", "a@good.example", fmt.Sprintf("u%d@example.test", i))); d.Action != "DUNNO" {
			t.Fatalf("%d: %s", i, d.Action)
		}
	}
	d := f.p.Evaluate(ctx, rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "u9@example.test"))
	// Four counted in the bucket that starts at f.now: the sliding count
	// falls to two 22.5 s into the next bucket, 82.5 s from now (whole
	// seconds, plus the rounding second).
	if d.Action != "450 4.7.1 Too many recipients from [192.0.2.10]; please retry in 84 seconds" || d.Check != "rate" {
		t.Fatalf("over the limit: %s", d.Action)
	}
	f.now = f.now.Add(2 * time.Minute)
	if d := f.p.Evaluate(ctx, rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "u9@example.test")); d.Action != "DUNNO" {
		t.Fatalf("after the window: %s", d.Action)
	}
}

// brokenStore fails every call, like Redis during a failover.
var brokenStore = store.Down{Err: errors.New("test")}

func TestStoreUnavailable(t *testing.T) {
	for _, tempfail := range []bool{false, true} {
		f := newFixture(t, func(c *Config) {
			c.OnStoreError = map[bool]string{true: "tempfail", false: "dunno"}[tempfail]
			c.Rates.RecipientsPerIP = 10
		})
		f.p.setStore(brokenStore)
		ctx := context.Background()
		d := f.p.Evaluate(ctx, rcptReq("192.0.2.30", "mail.x.example", "a@x.example", "alice@example.test"))
		want := "DUNNO"
		if tempfail {
			want = "451 4.3.0 Temporary local problem; please try again later"
		}
		if d.Action != want || d.Check != "store" {
			t.Fatalf("tempfail=%v: %s (%s)", tempfail, d.Action, d.Check)
		}
		// DNS lists still work without the store.
		if d := f.p.Evaluate(ctx, rcptReq("192.0.2.20", "x.example", "a@x.example", "alice@example.test")); !strings.HasPrefix(d.Action, "554 ") {
			t.Fatalf("listed client with the store down: %s", d.Action)
		}
		if f.p.StoreErrors() == 0 {
			t.Fatal("store errors not counted")
		}
	}
}

func TestZoneSkippedAfterFailures(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.DNSLists = append(c.DNSLists, List{Zone: "dead.test", Weight: 5}) })
	f.srv.ServFail("10.2.0.192.dead.test")
	ctx := context.Background()
	for range listFailLimit {
		f.p.Evaluate(ctx, rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "alice@example.test"))
	}
	before := f.srv.QueryCount("10.2.0.192.dead.test", 1)
	d := f.p.Evaluate(ctx, rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "alice@example.test"))
	if f.srv.QueryCount("10.2.0.192.dead.test", 1) != before || d.Action != "DUNNO" {
		t.Fatalf("failing zone still queried (%d→%d) or decided %s", before, f.srv.QueryCount("10.2.0.192.dead.test", 1), d.Action)
	}
	found := false
	for _, c := range d.Contributions {
		found = found || strings.Contains(c.Note, "skipped")
	}
	if !found {
		t.Fatalf("skip not reported: %+v", d.Contributions)
	}
}

func TestServer(t *testing.T) {
	f := newFixture(t, nil)
	s := NewServer(f.p, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ask := func(c net.Conn, br *bufio.Reader, req string) string {
		t.Helper()
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Fatalf("answer not ended by an empty line: %q", blank)
		}
		return strings.TrimSpace(line)
	}
	clean := "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.10\nhelo_name=mail.good.example\nsender=a@good.example\nrecipient=alice@example.test\n\n"
	// Listed, and in another network than the clean client, whose
	// reputation its many refusals would otherwise spoil.
	listed := strings.Replace(clean, "192.0.2.10", "198.51.100.20", 1)

	// Many requests on one connection, many connections at once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for range 5 {
				if a := ask(c, br, clean); a != "action=DUNNO" {
					t.Errorf("clean: %s", a)
				}
				if a := ask(c, br, listed); !strings.HasPrefix(a, "action=554 5.7.1 ") {
					t.Errorf("listed: %s", a)
				}
			}
		}()
	}
	wg.Wait()

	// Garbage: the connection is closed, the server goes on.
	c, _ := net.Dial("tcp", ln.Addr().String())
	io.WriteString(c, "\x00\x01garbage without equals\n\n") //nolint:errcheck
	c.SetReadDeadline(time.Now().Add(2 * time.Second))      //nolint:errcheck
	if n, err := c.Read(make([]byte, 10)); err == nil || n != 0 {
		t.Fatalf("garbage got an answer")
	}
	c.Close()
	// Half-closed mid-request.
	c, _ = net.Dial("tcp", ln.Addr().String())
	io.WriteString(c, "request=smtpd_access_policy\n") //nolint:errcheck
	c.(*net.TCPConn).CloseWrite()                      //nolint:errcheck
	c.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	if n, _ := c.Read(make([]byte, 10)); n != 0 {
		t.Fatal("half request answered")
	}
	c.Close()
	c, _ = net.Dial("tcp", ln.Addr().String())
	defer c.Close()
	if a := ask(c, bufio.NewReader(c), clean); a != "action=DUNNO" {
		t.Fatalf("after garbage: %s", a)
	}
}

// BenchmarkPipeline: one greylisting decision for a suspicious client,
// against the embedded store, with a warm DNS cache.
func BenchmarkPipeline(b *testing.B) {
	srv := dnstest.New(b, "in-addr.arpa. 300 IN SOA ns.test. h.test. 1 3600 600 86400 3600\n")
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, CacheSize: 10000, MaxTTL: time.Hour, NegativeMaxTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenEmbedded(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	p := NewPipeline(Config{Hostname: "mx.test", Weights: Weights{NoFCrDNS: 1},
		Greylist: Greylisting{Enabled: true, Delay: 5 * time.Minute, Window: time.Hour, Keep: time.Hour}},
		res, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		// 2000 clients: after the first rounds, their reverse DNS
		// answers come from the cache.
		d := p.Evaluate(ctx, rcptReq(fmt.Sprintf("198.18.%d.%d", i/250%8, i%250+1), "mta.example", fmt.Sprintf("a%d@x.example", i%100), "u@example.test"))
		if !strings.HasPrefix(d.Action, "450 ") {
			b.Fatalf("%s", d.Action)
		}
	}
}

func TestReputation(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Greylist.Enabled = false })
	ctx := context.Background()
	// Three refusals of a listed client...
	for range 3 {
		f.p.Evaluate(ctx, rcptReq("192.0.2.20", "x.example", "a@x.example", "alice@example.test"))
	}
	rep := store.NewReputation(f.st)
	if a, _, err := rep.Of(ctx, netip.MustParseAddr("192.0.2.20")); err != nil || a != (store.Standing{Refused: 3}) {
		t.Fatalf("reputation %+v %v", a, err)
	}
	// ...count against it even where nothing else does (the listing is
	// gone: a fresh fixture's DNS would still list it, so check the
	// contribution directly).
	d := f.p.Evaluate(ctx, rcptReq("192.0.2.20", "x.example", "a@x.example", "alice@example.test"))
	found := false
	for _, c := range d.Contributions {
		found = found || (c.Check == "reputation" && c.Score == 1)
	}
	if !found {
		t.Fatalf("bad reputation not counted: %+v", d.Contributions)
	}
	if _, n, err := rep.Of(ctx, netip.MustParseAddr("192.0.2.77")); err != nil || n != (store.Standing{Refused: 4}) {
		t.Fatalf("network reputation %+v %v", n, err)
	}
}

func TestMessageAndConnectionRates(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Rates = Rates{MessagesPerIP: 2, ConnectionsPerSubnet: 2}
		c.Rates.Window = time.Minute
	})
	ctx := context.Background()
	// Two messages of three recipients each: the recipients of one
	// message count once.
	for m := range 2 {
		for r := range 3 {
			req := rcptReq("192.0.2.10", "mail.good.example", "a@good.example", fmt.Sprintf("u%d@example.test", r))
			req["instance"] = fmt.Sprintf("msg%d", m)
			if d := f.p.Evaluate(ctx, req); d.Action != "DUNNO" {
				t.Fatalf("message %d rcpt %d: %s", m, r, d.Action)
			}
		}
	}
	req := rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "u@example.test")
	req["instance"] = "msg3"
	if d := f.p.Evaluate(ctx, req); d.Action != "450 4.7.1 Too many messages from [192.0.2.10]; please retry in 92 seconds" {
		t.Fatalf("third message: %s", d.Action)
	}
	conn := Request{"request": "smtpd_access_policy", "protocol_state": "CONNECT", "client_address": "198.51.100.1"}
	for i := range 2 {
		if d := f.p.Evaluate(ctx, conn); d.Action != "DUNNO" {
			t.Fatalf("connection %d: %s", i, d.Action)
		}
	}
	conn["client_address"] = "198.51.100.2" // same /24
	if d := f.p.Evaluate(ctx, conn); d.Action != "450 4.7.1 Too many connections from 198.51.100.0/24; please retry in 92 seconds" {
		t.Fatalf("third connection: %s", d.Action)
	}
}

func subReq(user, sender, rcpt, instance string) Request {
	return Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": "198.51.100.77",
		"sasl_username": user, "sender": sender, "recipient": rcpt, "instance": instance, "policy_context": "submission"}
}

func TestSubmission(t *testing.T) {
	mapPath := filepath.Join(t.TempDir(), "senders")
	if err := writeFileT(mapPath, "alice @example.test\nnews @news.example.test\ncarol @example.test\n"); err != nil {
		t.Fatal(err)
	}
	senders, err := sendermap.NewHolder(mapPath)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *Config) {
		c.Submission = Submission{SenderLogin: true, Senders: senders,
			Classes:     map[string]RateClass{"default": {Messages: 2, Recipients: 5, Window: time.Hour}, "bulk": {Window: time.Hour}},
			UserClasses: map[string]string{"news": "bulk"},
			Bulk:        Bulk{Filter: "smtp:[127.0.0.1]:2525", MinRecipients: 20, Senders: []string{"news"}, VolumeMessages: 2, VolumeWindow: time.Hour}}
	})
	ctx := context.Background()
	// Sender login.
	d := f.p.Evaluate(ctx, subReq("alice", "ceo@bank.example", "x@example.org", "i1"))
	if d.Action != "553 5.7.1 user alice may not send as <ceo@bank.example>; use an address of your own" || d.Check != "sender_map" {
		t.Fatalf("foreign sender: %s", d.Action)
	}
	// Limits: two messages, and five recipients per hour.
	for i, inst := range []string{"m1", "m1", "m2", "m2", "m2"} {
		if d := f.p.Evaluate(ctx, subReq("alice", "alice@example.test", fmt.Sprintf("r%d@example.org", i), inst)); d.Action != "DUNNO" {
			t.Fatalf("rcpt %d: %s %+v", i, d.Action, d.Contributions)
		}
	}
	d = f.p.Evaluate(ctx, subReq("alice", "alice@example.test", "r9@example.org", "m2"))
	if d.Action != "450 4.7.1 Sending limit reached for user alice: 5 recipients per 1h0m0s; please retry in 3961 seconds" {
		t.Fatalf("sixth recipient: %s", d.Action)
	}
	f2 := newFixture(t, func(c *Config) {
		c.Submission = Submission{Classes: map[string]RateClass{"default": {Messages: 2, Window: time.Hour}}}
	})
	for _, inst := range []string{"a", "b"} {
		f2.p.Evaluate(ctx, subReq("bob", "bob@example.test", "x@example.org", inst))
	}
	if d := f2.p.Evaluate(ctx, subReq("bob", "bob@example.test", "x@example.org", "c")); !strings.HasPrefix(d.Action, "450 4.7.1 Sending limit reached for user bob: 2 messages") {
		t.Fatalf("third message: %s", d.Action)
	}
	// A refused message does not use up the limit: after the window it
	// goes, and one more is refused before that.
	f2.now = f2.now.Add(2 * time.Hour)
	if d := f2.p.Evaluate(ctx, subReq("bob", "bob@example.test", "x@example.org", "c")); d.Action != "DUNNO" {
		t.Fatalf("after the window: %s", d.Action)
	}

	// Bulk routing at end of message.
	eom := func(user, sender, count string) string {
		return f.p.Evaluate(ctx, Request{"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE", "client_address": "198.51.100.77",
			"sasl_username": user, "sender": sender, "recipient_count": count, "instance": "e", "policy_context": "submission"}).Action
	}
	if a := eom("dave", "dave@example.test", "3"); a != "DUNNO" {
		t.Fatalf("ordinary message: %s", a)
	}
	if a := eom("alice", "alice@example.test", "25"); a != "FILTER smtp:[127.0.0.1]:2525" {
		t.Fatalf("25 recipients: %s", a)
	}
	if a := eom("news", "letters@news.example.test", "1"); a != "FILTER smtp:[127.0.0.1]:2525" {
		t.Fatalf("bulk sender: %s", a)
	}
	for _, inst := range []string{"v1", "v2"} {
		f.p.Evaluate(ctx, subReq("carol", "carol@example.test", "x@example.org", inst))
	}
	if a := eom("carol", "carol@example.test", "1"); a != "FILTER smtp:[127.0.0.1]:2525" {
		t.Fatalf("volume: %s", a)
	}
}

func writeFileT(p, s string) error { return os.WriteFile(p, []byte(s), 0o644) }

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n\n"))
	f.Add([]byte("a=b\r\n\r\n"))
	f.Add([]byte("=\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(strings.NewReader(string(data)))
		for range 10 {
			req, err := ReadRequest(br)
			if err != nil {
				return
			}
			if len(req) == 0 || len(req) > maxAttributes {
				t.Fatalf("request with %d attributes", len(req))
			}
			for k := range req {
				if k == "" || strings.ContainsAny(k, "=\n") {
					t.Fatalf("bad name %q", k)
				}
			}
		}
	})
}

// On shutdown a request being evaluated still gets its answer, idle
// connections are ended, and Serve returns.
func TestServerShutdown(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.Delay("30.2.0.192.bl.test", 300*time.Millisecond)
	s := NewServer(f.p, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer cancel()

	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.30\nhelo_name=mail.good.example\nsender=a@good.example\nrecipient=alice@example.test\n\n") //nolint:errcheck
	// SIGTERM while the DNS list answers slowly: once its query is in.
	for i := 0; f.srv.QueryCount("30.2.0.192.bl.test", dns.TypeA) == 0; i++ {
		if i > 500 {
			t.Fatal("the DNS list was never asked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	busy.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	line, err := bufio.NewReader(busy).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "action=") {
		t.Fatalf("request in progress: %q, %v", line, err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("accepted a connection after shutdown")
	}
}

// TestSkipNetworks: clients in policyd.skip_networks (loopback by
// default) get DUNNO without any check; an empty list checks them too.
func TestSkipNetworks(t *testing.T) {
	loop := setting.Networks("127.0.0.0/8", "::1/128")
	tests := []struct {
		name   string
		skip   []setting.Network
		ip     string
		action string // prefix
		note   string
	}{
		{"loopback skipped by default", loop, "127.0.0.1", "DUNNO", "client in skip_networks 127.0.0.0/8"},
		{"mapped loopback skipped", loop, "::ffff:127.0.0.1", "DUNNO", "client in skip_networks 127.0.0.0/8"},
		{"IPv6 loopback skipped", loop, "::1", "DUNNO", "client in skip_networks ::1/128"},
		{"outside the list: checked", loop, "192.0.2.30", "450 4.7.1 Greylisted", ""},
		{"empty list: loopback checked", nil, "127.0.0.1", "450 4.7.1 Greylisted", ""},
		{"a network of the admin's", setting.Networks("192.0.2.16/28"), "192.0.2.30", "DUNNO", "client in skip_networks 192.0.2.16/28"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.SkipNetworks = tc.skip })
			d := f.p.Evaluate(context.Background(), rcptReq(tc.ip, "laptop", "a@x.example", "alice@example.test"))
			if !strings.HasPrefix(d.Action, tc.action) {
				t.Fatalf("%s: %s %+v", tc.ip, d.Action, d.Contributions)
			}
			if tc.note != "" && (len(d.Contributions) == 0 || d.Contributions[len(d.Contributions)-1].Note != tc.note) {
				t.Fatalf("%s: contributions %+v, want note %q", tc.ip, d.Contributions, tc.note)
			}
		})
	}
}

// countingStore counts the round trips a request costs.
type countingStore struct {
	store.Store
	calls []string
}

func (c *countingStore) Do(ctx context.Context, ops []store.Op) error {
	c.calls = append(c.calls, fmt.Sprintf("do(%d)", len(ops)))
	return c.Store.Do(ctx, ops)
}
func (c *countingStore) Get(ctx context.Context, k string) ([]byte, bool, error) {
	c.calls = append(c.calls, "get")
	return c.Store.Get(ctx, k)
}
func (c *countingStore) Greylist(ctx context.Context, k string, now time.Time, p store.GreylistPolicy) (store.GreylistEntry, error) {
	c.calls = append(c.calls, "greylist")
	return c.Store.Greylist(ctx, k, now, p)
}
func (c *countingStore) Counters(ctx context.Context, k string, add []int64, ttl time.Duration) ([]int64, error) {
	c.calls = append(c.calls, "counters")
	return c.Store.Counters(ctx, k, add, ttl)
}
func (c *countingStore) Incr(ctx context.Context, k string, d int64, ttl time.Duration) (int64, error) {
	c.calls = append(c.calls, "incr")
	return c.Store.Incr(ctx, k, d, ttl)
}

// A greylisted request costs the store one round trip: the client's
// reputation, its network's passes and the attempt together.
func TestGreylistOneRoundTrip(t *testing.T) {
	f := newFixture(t, nil)
	cs := &countingStore{Store: f.st}
	f.p.setStore(cs)
	ctx := context.Background()
	d := f.p.Evaluate(ctx, rcptReq("198.51.100.7", "mta.sender.example", "a@sender.example", "alice@example.test"))
	if !strings.HasPrefix(d.Action, "450 4.7.1 Greylisted") || len(cs.calls) != 1 || cs.calls[0] != "do(4)" {
		t.Fatalf("%s after %v", d.Action, cs.calls)
	}
	// The retry after the delay passes, in one round trip too, and
	// then counts the pass (network passes, reputation).
	cs.calls = nil
	f.now = f.now.Add(6 * time.Minute)
	d = f.p.Evaluate(ctx, rcptReq("198.51.100.7", "mta.sender.example", "a@sender.example", "alice@example.test"))
	if d.Action != "DUNNO" || cs.calls[0] != "do(4)" || len(cs.calls) != 4 {
		t.Fatalf("retry: %s after %v", d.Action, cs.calls)
	}
}

// Hostile variant: a client whose bad reputation makes it refused must
// not leave a greylisting attempt behind (its retry would then pass), so
// the attempt is only made together with the reads when no reputation
// could tip the score to refusal.
func TestNoAttemptWhenReputationCouldRefuse(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Weights.BadReputation = 4 })
	ctx := context.Background()
	rep := store.NewReputation(f.st)
	for range 5 {
		rep.Record(ctx, netip.MustParseAddr("198.51.100.9"), false) //nolint:errcheck
	}
	d := f.p.Evaluate(ctx, rcptReq("198.51.100.9", "mta.sender.example", "a@sender.example", "alice@example.test"))
	if !strings.HasPrefix(d.Action, "554 5.7.1") || d.Check != "score" {
		t.Fatalf("bad reputation not refused: %s (%s)", d.Action, d.Check)
	}
	if keys, _ := f.st.Scan(ctx, "grey:", 0); len(keys) != 0 {
		t.Fatalf("a refused client left greylisting entries: %v", keys)
	}
	// A neighbour without that history is greylisted as before.
	if d := f.p.Evaluate(ctx, rcptReq("198.51.100.10", "mta.sender.example", "a@sender.example", "alice@example.test")); !strings.HasPrefix(d.Action, "450 ") {
		t.Fatalf("neighbour: %s", d.Action)
	}
}
