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
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/smtpreply"
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

// Resolver is what the pipeline asks of DNS: the engine's resolver.
type Resolver interface {
	mailauth.Resolver
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
	spf    *mailauth.SPFChecker
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
		spf: mailauth.NewSPFChecker(res, mailauth.SPFConfig{Timeout: cfg.Timeout / 2, Receiver: cfg.Hostname})}
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

func dunno(ctxName string, cs []Contribution) Decision {
	return Decision{Action: "DUNNO", Context: ctxName, Contributions: cs}
}

func reply(code int, enhanced, text, check string) *smtpreply.Reply {
	return &smtpreply.Reply{Code: code, Enhanced: enhanced, Text: text, Check: check}
}

func (d *Decision) set(r *smtpreply.Reply) {
	d.Reply, d.Action, d.Check = r, r.String(), r.Check
}

// Evaluate answers one request.
func (p *Pipeline) Evaluate(ctx context.Context, req Request) Decision {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	now := p.now()
	cs := []Contribution{}
	if req.Get("request") != "smtpd_access_policy" {
		return dunno("", append(cs, Contribution{Check: "protocol", Note: "not an smtpd_access_policy request"}))
	}
	// RFC: Postfix's policy_context names the check_policy_service
	// instance; without it, an authenticated client is submission.
	ctxName := req.Get("policy_context")
	switch ctxName {
	case "mx", "submission":
	case "":
		ctxName = "mx"
		if req.Get("sasl_username") != "" {
			ctxName = "submission"
		}
	default:
		// Only the two contexts exist (and become metric labels); any
		// other name gets the MX checks, and the log says so.
		cs = append(cs, Contribution{Check: "context", Note: fmt.Sprintf("unknown policy_context %q: MX checks", ctxName)})
		ctxName = "mx"
	}
	if ctxName == "submission" {
		return p.submission(ctx, req, now)
	}
	// A logged-in client never meets the MX checks, whatever the
	// context: a paying customer on a dynamic (PBL-listed) address with
	// HELO "laptop" would be refused or greylisted. The submission
	// checks run where the submission context asks for them (running
	// them here too would count each recipient twice).
	if user := req.Get("sasl_username"); user != "" {
		return dunno(ctxName, append(cs, Contribution{Check: "context",
			Note: fmt.Sprintf("authenticated client (sasl_username %s): MX checks skipped in policy_context %s", user, ctxName)}))
	}
	client, err := netip.ParseAddr(req.Get("client_address"))
	if err != nil {
		return dunno(ctxName, append(cs, Contribution{Check: "protocol", Note: "no usable client_address"}))
	}
	client = client.Unmap()
	for _, n := range p.cfg.SkipNetworks {
		if n.Contains(client) {
			return dunno(ctxName, append(cs, Contribution{Check: "context", Note: "client in skip_networks " + n.String()}))
		}
	}
	state := req.Get("protocol_state")
	if state == "CONNECT" {
		d := Decision{Context: ctxName, Action: "DUNNO", Contributions: cs}
		if r, err := p.rate(ctx, "connections", client, now, p.cfg.Rates.ConnectionsPerIP, p.cfg.Rates.ConnectionsPerSubnet, &d); err != nil {
			p.storeError()
			d.Contributions = append(d.Contributions, Contribution{Check: "rate", Note: "store unavailable: " + err.Error()})
		} else if r != nil {
			d.set(r)
		}
		return d
	}
	if state != "RCPT" {
		return dunno(ctxName, append(cs, Contribution{Check: "context", Note: "MX checks run at RCPT, not " + state}))
	}
	rcpt := strings.ToLower(req.Get("recipient"))
	if why := p.exempt(rcpt); why != "" {
		return dunno(ctxName, append(cs, Contribution{Check: "exempt", Note: why}))
	}

	d := Decision{Context: ctxName}
	storeDown := false
	storeFailed := func(op string, err error) {
		if !storeDown {
			p.storeError()
			p.log.Warn("policyd: store unavailable; check skipped", "op", op, "error", err, "instance", req.Get("instance"))
		}
		storeDown = true
		cs = append(cs, Contribution{Check: op, Note: "store unavailable: " + err.Error()})
	}

	// Rates per client and per network: messages (the first RCPT of a
	// transaction) and recipients.
	if p.st != nil {
		r, err := p.rate(ctx, "recipients", client, now, p.cfg.Rates.RecipientsPerIP, p.cfg.Rates.RecipientsPerSubnet, &d)
		if err == nil && r == nil && (p.cfg.Rates.MessagesPerIP > 0 || p.cfg.Rates.MessagesPerSubnet > 0) {
			var first bool
			if first, err = p.txns.First(ctx, req.Get("instance")); err == nil && first {
				r, err = p.rate(ctx, "messages", client, now, p.cfg.Rates.MessagesPerIP, p.cfg.Rates.MessagesPerSubnet, &d)
			}
		}
		if err != nil {
			storeFailed("rate", err)
		}
		if r != nil {
			d.Contributions = append(cs, d.Contributions...)
			d.set(r)
			return d
		}
	}

	// DNS lists and reverse DNS, at the same time.
	var lists []listing
	var rev mailauth.IPRevResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		rev = mailauth.CheckIPRev(ctx, p.res, net.IP(client.AsSlice()))
	}()
	lists = p.queryLists(ctx, client, now)
	<-done

	score := 0.0
	var listedOn []string
	for _, l := range lists {
		switch {
		case l.listed:
			score += l.list.Weight
			what := "listed"
			if l.list.Weight < 0 {
				what = "allowlisted"
			}
			cs = append(cs, Contribution{Check: "dnsbl", Score: l.list.Weight, Note: fmt.Sprintf("%s on %s (%s)", what, l.list.Zone, l.code)})
			if l.list.Weight > 0 {
				listedOn = append(listedOn, fmt.Sprintf("%s (%s)", l.list.Zone, l.code))
			}
		case l.err != "":
			cs = append(cs, Contribution{Check: "dnsbl", Note: l.list.Zone + ": " + l.err})
		}
	}
	if s, notes := p.heloProblems(req.Get("helo_name"), client); s != 0 {
		score += s
		cs = append(cs, Contribution{Check: "helo", Score: s, Note: strings.Join(notes, "; ")})
	}
	switch rev.Result {
	case mailauth.IPRevPass:
		if looksDynamic(rev.Name) {
			score += p.cfg.Weights.Dynamic
			cs = append(cs, Contribution{Check: "rdns", Score: p.cfg.Weights.Dynamic, Note: "reverse name " + rev.Name + " looks dynamic"})
		}
	case mailauth.IPRevFail, mailauth.IPRevPermError:
		score += p.cfg.Weights.NoFCrDNS
		cs = append(cs, Contribution{Check: "fcrdns", Score: p.cfg.Weights.NoFCrDNS, Note: "no forward-confirmed reverse DNS: " + rev.Error})
	case mailauth.IPRevTempError:
		cs = append(cs, Contribution{Check: "fcrdns", Note: "reverse DNS lookup failed: " + rev.Error})
	}
	if p.st != nil && !storeDown {
		addr, network, err := p.rep.Of(ctx, client)
		if err != nil {
			storeFailed("reputation", err)
		}
		// A network needs more refusals than one address before it
		// counts against its neighbours.
		for _, r := range []struct {
			what  string
			s     store.Standing
			limit int64
		}{{"client", addr, 3}, {"network " + store.Network(client).String(), network, 10}} {
			if err == nil && r.s.Refused >= r.limit && r.s.Refused > r.s.Passed {
				score += p.cfg.Weights.BadReputation
				cs = append(cs, Contribution{Check: "reputation", Score: p.cfg.Weights.BadReputation,
					Note: fmt.Sprintf("%s: %d refused, %d passed before", r.what, r.s.Refused, r.s.Passed)})
				break
			}
		}
	}
	d.Score, d.Contributions = score, cs

	if score >= p.cfg.RejectScore {
		text := fmt.Sprintf("Service unavailable; client [%s] is refused", client)
		if len(listedOn) > 0 {
			text = fmt.Sprintf("Service unavailable; client [%s] is listed on %s", client, strings.Join(listedOn, ", "))
		} else {
			var why []string
			for _, c := range cs {
				if c.Score > 0 {
					why = append(why, c.Note)
				}
			}
			text += ": " + strings.Join(why, "; ")
		}
		if p.cfg.ReferenceURL != "" {
			text += "; see " + p.cfg.ReferenceURL
		}
		check := "score"
		if len(listedOn) > 0 {
			check = "dnsbl"
		}
		d.set(reply(554, "5.7.1", text, check))
		p.reputation(ctx, client, false)
		return d
	}
	if score >= p.cfg.SuspiciousScore && p.cfg.Greylist.Enabled && p.st != nil && !storeDown {
		if r := p.greylist(ctx, req, client, now, &d); r != nil {
			d.set(r)
			return d
		}
		if storeDownNote(d.Contributions) {
			storeDown = true
		}
	}
	if storeDown && p.cfg.TempfailOnStoreError {
		d.set(reply(451, "4.3.0", "Temporary local problem; please try again later", "store"))
		return d
	}
	d.Action = "DUNNO"
	if storeDown {
		d.Check = "store"
	}
	return d
}

// rate counts one event of kind for the client and its network and
// returns the reply when a cap is exceeded.
func (p *Pipeline) rate(ctx context.Context, kind string, client netip.Addr, now time.Time, perIP, perNet int64, d *Decision) (*smtpreply.Reply, error) {
	for _, r := range []struct {
		rate  store.Rate
		limit int64
		what  string
	}{{store.ClientRate(kind, client), perIP, "[" + client.String() + "]"}, {store.NetworkRate(kind, client), perNet, store.Network(client).String()}} {
		if r.limit <= 0 {
			continue
		}
		n, err := p.rates.Add(ctx, r.rate, now, p.cfg.RateWindow, 1)
		if err != nil {
			return nil, err
		}
		if n > r.limit {
			secs := p.retryIn(ctx, r.rate, now, p.cfg.RateWindow, r.limit)
			d.Contributions = append(d.Contributions, Contribution{Check: "rate", Note: fmt.Sprintf("%d %s from %s in %v, limit %d", n, kind, r.what, p.cfg.RateWindow, r.limit)})
			return reply(450, "4.7.1", fmt.Sprintf("Too many %s from %s; please retry in %d seconds", kind, r.what, secs), "rate"), nil
		}
	}
	return nil, nil
}

// retryIn says in how many seconds the sliding window key admits one
// more event (the whole window if the store cannot tell).
func (p *Pipeline) retryIn(ctx context.Context, rate store.Rate, now time.Time, win time.Duration, limit int64) int {
	wait, err := p.rates.Wait(ctx, rate, now, win, limit)
	if err != nil || wait <= 0 || wait > 2*win {
		wait = win
	}
	return int(wait.Seconds())
}

func storeDownNote(cs []Contribution) bool {
	for _, c := range cs {
		if strings.HasPrefix(c.Note, "store unavailable") {
			return true
		}
	}
	return false
}

// greylist decides for a suspicious client; nil means pass.
func (p *Pipeline) greylist(ctx context.Context, req Request, client netip.Addr, now time.Time, d *Decision) *smtpreply.Reply {
	g := p.cfg.Greylist
	network := store.Network(client)
	sender := strings.ToLower(req.Get("sender"))
	if dom := senderDomain(sender); dom != "" {
		for _, a := range g.SPFDomains {
			a = strings.ToLower(a)
			if dom == a || strings.HasSuffix(dom, "."+a) {
				r := p.spf.CheckMailFrom(ctx, net2ip(client), req.Get("helo_name"), sender)
				if r.Result == mailauth.SPFPass {
					d.Contributions = append(d.Contributions, Contribution{Check: "greylist", Note: "not greylisted: SPF passes for " + dom + ", an allowlisted sender domain"})
					return nil
				}
			}
		}
	}
	if g.AllowlistAfter > 0 {
		n, err := p.grey.Passes(ctx, network)
		if err != nil {
			d.Contributions = append(d.Contributions, Contribution{Check: "greylist", Note: "store unavailable: " + err.Error()})
			p.storeError()
			return nil
		}
		if n >= g.AllowlistAfter {
			d.Contributions = append(d.Contributions, Contribution{Check: "greylist", Note: fmt.Sprintf("not greylisted: %s passed greylisting %d times", network, n)})
			return nil
		}
	}
	t := store.Triplet{Network: network, Sender: NormalizeSender(sender), Recipient: req.Get("recipient")}
	e, err := p.grey.Attempt(ctx, t, now, store.GreylistPolicy{Delay: g.Delay, Window: g.Window, Keep: g.Keep})
	if err != nil {
		d.Contributions = append(d.Contributions, Contribution{Check: "greylist", Note: "store unavailable: " + err.Error()})
		p.storeError()
		p.log.Warn("policyd: store unavailable; greylisting skipped", "error", err, "instance", req.Get("instance"))
		return nil
	}
	if e.Passed {
		d.Contributions = append(d.Contributions, Contribution{Check: "greylist", Note: fmt.Sprintf("passed greylisting (first seen %s)", e.First.UTC().Format(time.RFC3339))})
		if e.Count == 1 {
			p.grey.AddPass(ctx, network, g.Keep) //nolint:errcheck // best effort
			p.reputation(ctx, client, true)
		}
		return nil
	}
	wait := int(e.Wait(now, store.GreylistPolicy{Delay: g.Delay}).Seconds() + 0.999)
	if wait < 1 {
		wait = 1
	}
	d.Contributions = append(d.Contributions, Contribution{Check: "greylist", Note: fmt.Sprintf("greylisted %s until %s", t, e.First.Add(g.Delay).UTC().Format(time.RFC3339))})
	return reply(450, "4.7.1", fmt.Sprintf("Greylisted: please retry in %d seconds", wait), "greylist")
}

func net2ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

// reputation records an outcome for the client and its network; best
// effort: a store failure costs one count, and mail goes on.
func (p *Pipeline) reputation(ctx context.Context, client netip.Addr, passed bool) {
	if p.st == nil {
		return
	}
	p.rep.Record(ctx, client, passed) //nolint:errcheck // best effort
}

// exempt says why a recipient skips the checks, or "".
func (p *Pipeline) exempt(rcpt string) string {
	local, domain, ok := strings.Cut(rcpt, "@")
	if !ok {
		return ""
	}
	if local == "postmaster" || local == "abuse" {
		if len(p.cfg.LocalDomains) == 0 {
			return local + "@ is always accepted"
		}
		for _, d := range p.cfg.LocalDomains {
			if strings.EqualFold(d, domain) {
				return local + "@ of a local domain is always accepted"
			}
		}
	}
	for _, e := range p.cfg.ExemptRecipients {
		e = strings.ToLower(e)
		if e == rcpt || (strings.HasPrefix(e, "@") && e[1:] == domain) {
			return "recipient " + rcpt + " is exempt (" + e + ")"
		}
	}
	return ""
}

func senderDomain(s string) string {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return s[i+1:]
	}
	return ""
}

var (
	batv   = regexp.MustCompile(`^(prvs|btv1|msprvs1)=[^=]*=`)
	srs    = regexp.MustCompile(`^srs[01][=+-][^=]+=[^=]+=([^=]+)=(.+)$`)
	digits = regexp.MustCompile(`\d+`)
)

// NormalizeSender makes the greylisting key of a sender: bounce address
// tags (BATV prvs=), SRS rewriting and VERP-style numbers vary between
// retries of the same message and must not restart greylisting
// (postgrey does the same).
func NormalizeSender(s string) string {
	s = strings.ToLower(s)
	local, domain, ok := strings.Cut(s, "@")
	if !ok {
		return s
	}
	local = batv.ReplaceAllString(local, "")
	if m := srs.FindStringSubmatch(local); m != nil {
		return digits.ReplaceAllString(m[2], "#") + "@" + m[1]
	}
	return digits.ReplaceAllString(local, "#") + "@" + domain
}
