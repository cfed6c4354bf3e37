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
	"strings"

	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/spf"
	"github.com/wehr/wehr/store"
)

// Weights are the score each finding adds.
type Weights struct {
	HeloInvalid   float64 `yaml:"helo_invalid"`
	HeloClaimsUs  float64 `yaml:"helo_claims_us"`
	NoFCrDNS      float64 `yaml:"no_fcrdns"`
	Dynamic       float64 `yaml:"dynamic_name"`
	BadReputation float64 `yaml:"bad_reputation"`
}

// Greylisting configures greylisting of suspicious clients.
type Greylisting struct {
	Enabled bool          `yaml:"enabled"`
	Delay   time.Duration `yaml:"delay"`
	Window  time.Duration `yaml:"window"`
	Keep    time.Duration `yaml:"keep"`
	// AllowlistAfter passes a client network without greylisting once
	// this many of its retries have passed (0: never).
	AllowlistAfter int64 `yaml:"allowlist_after"`
	// SPFDomains are sender domains (and their subdomains) never
	// greylisted when SPF passes for the client: big senders retry from
	// many addresses.
	SPFDomains []string `yaml:"spf_domains"`
}

// Rates are per-window caps; 0 means none. Connections are counted when
// Postfix asks at CONNECT (check_policy_service in
// smtpd_client_restrictions), messages and recipients at RCPT.
type Rates struct {
	ConnectionsPerIP     int64         `yaml:"connections_per_ip"`
	ConnectionsPerSubnet int64         `yaml:"connections_per_subnet"`
	MessagesPerIP        int64         `yaml:"messages_per_ip"`
	MessagesPerSubnet    int64         `yaml:"messages_per_subnet"`
	RecipientsPerIP      int64         `yaml:"recipients_per_ip"`
	RecipientsPerSubnet  int64         `yaml:"recipients_per_subnet"`
	Window               time.Duration `yaml:"window"`
}

// Config configures the policy service; with yaml keys, it is the
// policyd: section of the configuration file (settings.go has its
// defaults and checks).
type Config struct {
	listener.Settings `yaml:",inline"`
	// RequestTimeout bounds the answer to one request.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// IdleTimeout ends a connection Postfix leaves idle; MaxConnections
	// caps the connections served at once.
	IdleTimeout    time.Duration `yaml:"idle_timeout"`
	MaxConnections int           `yaml:"max_connections"`
	// SkipNetworks are clients that get DUNNO from the MX checks
	// without any check (this host's own services, by default).
	SkipNetworks []setting.Network `yaml:"skip_networks"`
	// LocalDomains are our domains (local, virtual and relay): their
	// postmaster@ and abuse@ skip the block and greylist checks, and a
	// HELO claiming one of them is suspicious.
	LocalDomains []string `yaml:"local_domains"`
	// ExemptRecipients skip the block and greylist checks: addresses or
	// @domain.
	ExemptRecipients []string `yaml:"exempt_recipients"`
	ReferenceURL     string   `yaml:"reference_url"`
	// RejectScore refuses a client at this score; SuspiciousScore
	// greylists it.
	RejectScore     float64 `yaml:"reject_score"`
	SuspiciousScore float64 `yaml:"suspicious_score"`
	// OnStoreError is dunno (let the mail through) or tempfail (451
	// 4.3.0) when the store cannot answer.
	OnStoreError string      `yaml:"on_store_error"`
	DNSLists     []List      `yaml:"dns_lists"`
	Weights      Weights     `yaml:"weights"`
	Rates        Rates       `yaml:"rates"`
	Greylist     Greylisting `yaml:"greylist"`
	Submission   Submission  `yaml:"submission"`

	// Hostname is this host's name (a HELO claiming it is suspicious).
	Hostname string `yaml:"-"`
	// Observer, if set, counts decisions and store failures (metrics).
	Observer Observer `yaml:"-"`
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
	if cfg.Rates.Window == 0 {
		cfg.Rates.Window = time.Minute
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	cfg.DNSLists = withKnownCodes(cfg.DNSLists)
	classes := map[string]string{}
	for u, c := range cfg.Submission.UserClasses {
		classes[strings.ToLower(u)] = c
	}
	cfg.Submission.UserClasses = classes
	// Compared with lower-cased sender domains on every request.
	spfDomains := make([]string, len(cfg.Greylist.SPFDomains))
	for i, d := range cfg.Greylist.SPFDomains {
		spfDomains[i] = strings.ToLower(d)
	}
	cfg.Greylist.SPFDomains = spfDomains
	p := &Pipeline{cfg: cfg, res: res, log: log, now: time.Now,
		spf: spf.New(res, spf.Config{Timeout: cfg.RequestTimeout / 2, Receiver: cfg.Hostname})}
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
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
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
