// Package policybench is a load generator for Postfix policy services
// (wehr policyd, postgrey, ...): it speaks the policy delegation protocol
// as Postfix does, over persistent connections, with a greylisting
// workload: first attempts and retries of (client, sender, recipient)
// triplets from many networks.
package policybench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/internal/loadstat"
)

// Options configure a run.
type Options struct {
	Network, Addr string // tcp HOST:PORT or unix /path
	Concurrency   int
	Duration      time.Duration
	// Triplets is the number of distinct (client, sender, recipient)
	// triplets the workload cycles through; half of the requests retry a
	// triplet seen before.
	Triplets int
	Seed     uint64
	// Requests, if set, ends the run after this many requests (the
	// whole run, spread over the connections) instead of at Duration.
	Requests int
}

// Report is what a run measured.
type Report struct {
	Requests  int
	Errors    int
	Elapsed   time.Duration
	PerSecond float64
	loadstat.Latency
	Actions    map[string]int
	FirstError string
}

// Request builds the i-th request of the workload.
func Request(i, triplets int) string {
	t := i % triplets
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=198.18.%d.%d\nclient_name=unknown\nreverse_client_name=unknown\nhelo_name=mta%d.bench.example\n"+
		"sender=news%d@sender%d.bench.example\nrecipient=user%d@example.test\nrecipient_count=0\nqueue_id=\n"+
		"instance=%x.bench\nsize=0\npolicy_context=mx\n\n",
		(t/200)%250, t%200+1, t%1000, t%7, t%500, t%97, i)
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Triplets <= 0 {
		o.Triplets = 20000
	}
	return o
}

// Run runs the workload.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	rep := &Report{Actions: map[string]int{}}
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(o.Duration)
	if o.Requests > 0 {
		deadline = time.Now().Add(24 * time.Hour)
	}
	var left atomic.Int64
	left.Store(int64(o.Requests))
	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(o.Seed, uint64(w)))
			c, err := net.Dial(o.Network, o.Addr)
			if err != nil {
				mu.Lock()
				rep.Errors++
				rep.FirstError = err.Error()
				mu.Unlock()
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if o.Requests > 0 && left.Add(-1) < 0 {
					return
				}
				i := rng.IntN(o.Triplets * 4)
				t0 := time.Now()
				action, err := ask(c, br, Request(i, o.Triplets))
				d := time.Since(t0)
				mu.Lock()
				rep.Requests++
				if err != nil {
					rep.Errors++
					if rep.FirstError == "" {
						rep.FirstError = err.Error()
					}
					mu.Unlock()
					return
				}
				lat = append(lat, d)
				rep.Actions[classify(action)]++
				mu.Unlock()
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

// Warmup sends each of o's triplets once over o.Concurrency
// connections, unmeasured, so that a Run after it measures a service in
// its steady state (DNS answers cached, triplets known) rather than its
// first minutes.
func Warmup(ctx context.Context, o Options) error {
	o = o.withDefaults()
	var next atomic.Int64
	errs := make(chan error, o.Concurrency)
	for range o.Concurrency {
		go func() {
			c, err := net.Dial(o.Network, o.Addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Triplets {
					break
				}
				if _, err := ask(c, br, Request(i, o.Triplets)); err != nil {
					errs <- fmt.Errorf("warm-up: %w", err)
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range o.Concurrency {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func ask(c net.Conn, br *bufio.Reader, req string) (string, error) {
	c.SetDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\n" {
		return "", fmt.Errorf("answer not ended by an empty line")
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "action="), nil
}

// classify names an action for the report: DUNNO, PREPEND, or the reply
// code class (450, 554, DEFER_IF_PERMIT...).
func classify(a string) string {
	f := strings.Fields(a)
	if len(f) == 0 {
		return "(empty)"
	}
	return strings.ToUpper(f[0])
}

// Print writes the report.
func (r *Report) Print(w io.Writer, label string) {
	fmt.Fprintf(w, "%s: %d requests in %v: %.0f req/s; %v; errors %d\n",
		label, r.Requests, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.Latency, r.Errors)
	fmt.Fprintf(w, "  actions: %s\n", loadstat.Counts(r.Actions))
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}
