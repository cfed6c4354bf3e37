// Package stsbench measures MTA-STS policy services (wehr's socketmap,
// postfix-mta-sts-resolver) as Postfix asks them: a load generator that
// speaks the socketmap protocol over persistent connections, and the
// world it needs: a DNS zone and an HTTPS policy host for many domains,
// each policy host name with its own certificate from a test CA, minted
// when first asked for.
package stsbench

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/internal/loadstat"
)

// Zone is the parent of the benchmark's domains.
const Zone = "sts.bench.example"

// Domain is the i-th domain of the workload.
func Domain(i int) string { return "d" + strconv.Itoa(i) + "." + Zone }

// Mode is the policy mode of the i-th domain: every tenth is testing,
// the rest enforce (the answers Postfix gets: nothing, and "secure").
func Mode(i int) string {
	if i%10 == 9 {
		return "testing"
	}
	return "enforce"
}

// ZoneText is the DNS of n domains in master-file form: each with an MX,
// the MX's address, its _mta-sts record and its policy host at policyIP.
func ZoneText(n int, policyIP string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s. 3600 IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n", Zone, Zone, Zone)
	for i := range n {
		d := Domain(i)
		fmt.Fprintf(&b, "%[1]s. 3600 IN MX 10 mx.%[1]s.\nmx.%[1]s. 3600 IN A 192.0.2.1\n_mta-sts.%[1]s. 3600 IN TXT \"v=STSv1; id=2026120201\"\nmta-sts.%[1]s. 3600 IN A %[2]s\n", d, policyIP)
	}
	return b.String()
}

// Policy is the policy file of the i-th domain.
func Policy(i int) string {
	return fmt.Sprintf("version: STSv1\nmode: %s\nmx: mx.%s\nmax_age: 604800\n", Mode(i), Domain(i))
}

// CA is the benchmark's certificate authority.
type CA struct {
	PEM  []byte
	cert *x509.Certificate
	key  *ecdsa.PrivateKey

	mu    sync.Mutex
	certs map[string]*tls.Certificate
	next  int64
}

// NewCA makes a certificate authority valid for a day.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wehr bench CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key,
		certs: map[string]*tls.Certificate{}, next: 100}, nil
}

// Certificate is the certificate for one host name, minted when first
// asked for (a GetCertificate for an HTTPS server).
func (ca *CA) Certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(hello.ServerName)
	if !strings.HasSuffix(name, "."+Zone) {
		return nil, fmt.Errorf("stsbench: no certificate for %q", name)
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.certs[name]; c != nil {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ca.next++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.next), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ca.certs[name] = c
	return c, nil
}

// PolicyHandler serves the policy files of the workload's domains at
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt, and counts them.
type PolicyHandler struct{ Served atomic.Int64 }

func (h *PolicyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	d, ok := strings.CutPrefix(host, "mta-sts.d")
	i, err := strconv.Atoi(strings.TrimSuffix(d, "."+Zone))
	if !ok || err != nil || i < 0 || r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	h.Served.Add(1)
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, Policy(i))
}

// ServePolicies serves h over HTTPS on ln with ca's certificates until
// ctx ends.
func ServePolicies(ctx context.Context, ln net.Listener, ca *CA, h http.Handler) error {
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{GetCertificate: ca.Certificate},
		ErrorLog: log.New(io.Discard, "", 0), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Options configure a run.
type Options struct {
	Network, Addr string // tcp HOST:PORT or unix /path
	// Map is the socketmap name Postfix asks (postfix in
	// socketmap:inet:HOST:PORT:postfix).
	Map         string
	Concurrency int
	Duration    time.Duration
	// Domains is how many distinct domains the workload asks for,
	// uniformly.
	Domains int
	// First is the first domain Fill asks for (it asks for First to
	// Domains-1).
	First int
	Seed  uint64
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Domains <= 0 {
		o.Domains = 10000
	}
	if o.Map == "" {
		o.Map = "postfix"
	}
	return o
}

// Report is what a run measured.
type Report struct {
	Requests  int
	Errors    int
	Elapsed   time.Duration
	PerSecond float64
	loadstat.Latency
	// Answers counts the answers: secure, dane-only, NOTFOUND, TEMP,
	// PERM, ...
	Answers map[string]int
	// Wrong counts answers that are not what the domain's policy says.
	Wrong      int
	FirstError string
}

// Run asks for random domains of the workload over o.Concurrency
// connections for o.Duration.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	return run(ctx, o, func(rng *mrand.Rand, _ int) (int, bool) { return rng.IntN(o.Domains), true })
}

// Fill asks for each domain of the workload once (from o.First), over
// o.Concurrency connections: a cold cache filled, at the rate the report
// says.
func Fill(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	var next atomic.Int64
	next.Store(int64(o.First))
	o.Duration = 24 * time.Hour
	return run(ctx, o, func(*mrand.Rand, int) (int, bool) {
		i := int(next.Add(1)) - 1
		return i, i < o.Domains
	})
}

func run(ctx context.Context, o Options, pick func(*mrand.Rand, int) (int, bool)) (*Report, error) {
	rep := &Report{Answers: map[string]int{}}
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(o.Duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(o.Seed, uint64(w)))
			fail := func(err error) {
				mu.Lock()
				rep.Errors++
				if rep.FirstError == "" {
					rep.FirstError = err.Error()
				}
				mu.Unlock()
			}
			c, err := net.Dial(o.Network, o.Addr)
			if err != nil {
				fail(err)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			local := make([]time.Duration, 0, 1<<16)
			answers := map[string]int{}
			wrong := 0
			defer func() {
				mu.Lock()
				lat = append(lat, local...)
				rep.Requests += len(local)
				for k, n := range answers {
					rep.Answers[k] += n
				}
				rep.Wrong += wrong
				mu.Unlock()
			}()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i, ok := pick(rng, w)
				if !ok {
					return
				}
				t0 := time.Now()
				ans, err := Ask(c, br, o.Map, Domain(i))
				if err != nil {
					fail(err)
					return
				}
				local = append(local, time.Since(t0))
				kind := classify(ans)
				answers[kind]++
				if want := Expected(i); kind != want {
					wrong++
				}
			}
		}()
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	rep.Latency = loadstat.Summarize(lat)
	if len(lat) > 0 {
		rep.PerSecond = float64(len(lat)) / rep.Elapsed.Seconds()
	}
	return rep, nil
}

// Expected is the kind of answer the i-th domain's policy calls for:
// "secure" for enforce, NOTFOUND for testing.
func Expected(i int) string {
	if Mode(i) == "enforce" {
		return "secure"
	}
	return "NOTFOUND"
}

// Ask sends one socketmap request (a netstring "MAP KEY") and reads the
// answer's netstring.
func Ask(c net.Conn, br *bufio.Reader, mapName, key string) (string, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck
	q := mapName + " " + key
	if _, err := io.WriteString(c, strconv.Itoa(len(q))+":"+q+","); err != nil {
		return "", err
	}
	ls, err := br.ReadString(':')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(strings.TrimSuffix(ls, ":"))
	if err != nil || n < 0 || n > 100000 {
		return "", fmt.Errorf("stsbench: bad netstring length %q", ls)
	}
	b := make([]byte, n+1)
	if _, err := io.ReadFull(br, b); err != nil {
		return "", err
	}
	if b[n] != ',' {
		return "", fmt.Errorf("stsbench: netstring not ended by a comma")
	}
	return string(b[:n]), nil
}

// classify names an answer: "secure", "dane-only", NOTFOUND, TEMP, PERM
// or the answer's first word.
func classify(a string) string {
	status, rest, _ := strings.Cut(a, " ")
	if status != "OK" {
		return status
	}
	word, _, _ := strings.Cut(rest, " ")
	return word
}

// Print writes the report.
func (r *Report) Print(w io.Writer, label string) {
	fmt.Fprintf(w, "%s: %d lookups in %v: %.0f/s; %v; errors %d, wrong answers %d\n",
		label, r.Requests, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.Latency, r.Errors, r.Wrong)
	fmt.Fprintf(w, "  answers: %s\n", loadstat.Counts(r.Answers))
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}
