package resolver

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzAnswer hands the resolver arbitrary answers (with the query's ID,
// so they get past the first check) for TXT, MX, A and PTR lookups: it
// must never panic and must fail only with a bare *net.DNSError, which
// the SPF, DKIM and DMARC libraries classify by type assertion.
func FuzzAnswer(f *testing.F) {
	var reply atomic.Pointer[[]byte]
	addr := rawServer(f, func(q []byte) [][]byte {
		p := reply.Load()
		if p == nil || len(q) < 2 {
			return nil
		}
		return [][]byte{append(append([]byte(nil), q[:2]...), (*p)...)}
	})
	r, err := New(Config{Servers: []string{addr}, Timeout: 100 * time.Millisecond, Attempts: 1, CacheSize: -1})
	if err != nil {
		f.Fatal(err)
	}
	seed := func(rr string) {
		q := new(dns.Msg)
		q.SetQuestion("example.org.", dns.TypeTXT)
		a := new(dns.Msg)
		a.SetReply(q)
		if rr != "" {
			x, err := dns.NewRR(rr)
			if err != nil {
				f.Fatal(err)
			}
			a.Answer = append(a.Answer, x)
		}
		b, err := a.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[2:])
	}
	seed(`example.org. 60 IN TXT "v=spf1 -all"`)
	seed(`example.org. 60 IN CNAME other.example.`)
	seed(`example.org. 60 IN MX 10 mx.example.org.`)
	seed("")
	f.Add([]byte{0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		reply.Store(&data)
		ctx := context.Background()
		check := func(err error) {
			if err == nil {
				return
			}
			if _, ok := err.(*net.DNSError); !ok {
				t.Fatalf("error %T %v is not a bare *net.DNSError", err, err)
			}
		}
		_, err := r.LookupTXT(ctx, "example.org")
		check(err)
		_, err = r.LookupMX(ctx, "example.org")
		check(err)
		_, err = r.LookupIPAddr(ctx, "example.org")
		check(err)
		_, err = r.LookupAddr(ctx, "192.0.2.1")
		check(err)
	})
}
