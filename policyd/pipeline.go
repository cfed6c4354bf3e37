// Package policyd is wehr's Postfix policy delegation server: a pipeline
// of checks over each request (DNS block- and allowlists, HELO sanity,
// forward-confirmed reverse DNS, dynamic-looking names, rates and
// reputation in the shared store, greylisting of suspicious clients)
// that ends in DUNNO or an SMTP reply with an enhanced status code and a
// reason the sender's operator can act on. Nothing is ever accepted and
// thrown away: every refusal happens in the SMTP dialogue.
package policyd

import (
	"context"

	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/spf"
	"github.com/wehr/wehr/store"
)

// Weights are the score each finding adds.
type Weights struct {
	HeloInvalid   float64
	HeloClaimsUs  float64
	NoFCrDNS      float64
	Dynamic       float64
	BadReputation float64
}

// Greylisting configures greylisting of suspicious clients.
type Greylisting struct {
	Enabled bool
	Delay   time.Duration
	Window  time.Duration
	Keep    time.Duration
	// AllowlistAfter passes a client network without greylisting once
	// this many of its retries have passed (0: never).
	AllowlistAfter int64
	// SPFDomains are sender domains (and their subdomains) never
	// greylisted when SPF passes for the client: big senders retry from
	// many addresses.
	SPFDomains []string
}

// Rates are per-window caps; 0 means none.
type Rates struct {
	ConnectionsPerIP, ConnectionsPerSubnet int64
	MessagesPerIP, MessagesPerSubnet       int64
	RecipientsPerIP, RecipientsPerSubnet   int64
}

// Config configures the pipeline.
type Config struct {
	Hostname string
	// SkipNetworks are clients that get DUNNO from the MX checks
	// without any check (this host's own services, by default).
	SkipNetworks []netip.Prefix
	// LocalDomains are our domains (local, virtual and relay): their
	// postmaster@ and abuse@ skip the block and greylist checks, and a
	// HELO claiming one of them is suspicious.
	LocalDomains []string
	// ExemptRecipients skip the block and greylist checks: addresses or
	// @domain.
	ExemptRecipients []string
	ReferenceURL     string
	Lists            []List
	Weights          Weights
	// RejectScore refuses a client at this score; SuspiciousScore
	// greylists it.
	RejectScore, SuspiciousScore float64
	// Rates cap connections, messages and recipients per client address
	// and per network in RateWindow (0: no cap). Connections are counted
	// when Postfix asks at CONNECT (check_policy_service in
	// smtpd_client_restrictions), messages and recipients at RCPT.
	Rates      Rates
	RateWindow time.Duration
	Greylist   Greylisting
	// TempfailOnStoreError answers 451 4.3.0 when the store cannot
	// answer; the default is to let the mail through (DUNNO).
	TempfailOnStoreError bool
	Timeout              time.Duration
	Submission           Submission
	// Observer, if set, counts decisions and store failures (metrics).
	Observer Observer
}

// Observer counts decisions and store failures; *metrics.Metrics is one.
type Observer interface {
	Decision(context, action, check string, d time.Duration)
	StoreError(user string)
}

// Resolver is what the pipeline asks of DNS (SPF for the greylisting
// allowlist, iprev, the DNS lists): *resolver.Resolver is one.
type Resolver interface {
	spf.Resolver
	ipResolver
}

// Pipeline evaluates requests. It is safe for concurrent use.
type Pipeline struct {
	cfg    Config
	res    Resolver
	st     store.Store // nil: no store
	grey   store.Greylists
	rep    store.Reputation
	rates  store.Rates
	txns   store.Transactions
	spf    *spf.Checker
	log    *slog.Logger
	health listHealth
	now    func() time.Time

	storeErrors atomic.Int64
}

// NewPipeline makes a pipeline; st may be nil (no store: no greylisting,
// rates or reputation).
func NewPipeline(cfg Config, res Resolver, st store.Store, log *slog.Logger) *Pipeline {
	if cfg.RejectScore == 0 {
		cfg.RejectScore = 5
	}
	if cfg.SuspiciousScore == 0 {
		cfg.SuspiciousScore = 1
	}
	if cfg.RateWindow == 0 {
		cfg.RateWindow = time.Minute
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	cfg.Lists = withKnownCodes(cfg.Lists)
	p := &Pipeline{cfg: cfg, res: res, log: log, now: time.Now,
		spf: spf.New(res, spf.Config{Timeout: cfg.Timeout / 2, Receiver: cfg.Hostname})}
	p.setStore(st)
	return p
}

// setStore makes st the pipeline's store, through the store's state
// types (they own every key).
func (p *Pipeline) setStore(st store.Store) {
	p.st = st
	p.grey, p.rep, p.rates, p.txns = store.NewGreylists(st), store.NewReputation(st), store.NewRates(st), store.NewTransactions(st)
}

// StoreErrors counts the requests on which the store did not answer.
func (p *Pipeline) StoreErrors() int64 { return p.storeErrors.Load() }

// storeError counts a store failure.
func (p *Pipeline) storeError() {
	p.storeErrors.Add(1)
	if p.cfg.Observer != nil {
		p.cfg.Observer.StoreError("policyd")
	}
}

// Contribution is one check's part in a decision.
type Contribution struct {
	Check string  `json:"check"`
	Score float64 `json:"score"`
	Note  string  `json:"note"`
}

// Decision is the answer to one request.
type Decision struct {
	// Action is what Postfix gets: DUNNO, or a reply "450 4.7.1 ...".
	Action string `json:"action"`
	// Reply is set when Action is a reply.
	Reply *smtpreply.Reply `json:"-"`
	// Check is the check that decided ("" for DUNNO with nothing found).
	Check         string         `json:"check"`
	Score         float64        `json:"score"`
	Contributions []Contribution `json:"contributions"`
	Context       string         `json:"context"` // mx or submission
}

func (d *Decision) set(r *smtpreply.Reply) {
	d.Reply, d.Action, d.Check = r, r.String(), r.Check
}

// Evaluate answers one request.
func (p *Pipeline) Evaluate(ctx context.Context, req Request) Decision {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	q, err := ParseQuery(req)
	if err != nil {
		return Decision{Action: "DUNNO", Contributions: []Contribution{{Check: "protocol", Note: err.Error()}}}
	}
	ev := &evaluation{p: p, q: q, now: p.now(), d: Decision{Context: q.Context, Contributions: []Contribution{}}}
	if q.UnknownContext != "" {
		ev.note("context", 0, fmt.Sprintf("unknown policy_context %q: MX checks", q.UnknownContext))
	}
	if q.Context == "submission" {
		return p.submission(ctx, ev)
	}
	return p.mx(ctx, ev)
}
