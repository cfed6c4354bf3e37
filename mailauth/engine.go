package mailauth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/deadline"
	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/spf"
	"github.com/wehr/wehr/workers"
)

// Envelope is what the SMTP dialogue told us about a message.
type Envelope struct {
	ClientIP net.IP // nil when unknown (CLI without --ip)
	Helo     string
	MailFrom string // "" for the null sender
	RcptTo   []string
	AuthUser string // SASL login, "" when not authenticated
}

// Actions the verdict implies.
const (
	ActionAccept     = "accept"
	ActionQuarantine = "quarantine"
	ActionReject     = "reject"
	ActionTempfail   = "tempfail"
)

// History knows which client networks delivered DMARC-passing mail for
// an author domain. An error means the history is unknown, which is
// never evidence: a store failover must not turn quarantines into
// refusals.
type History interface {
	Passed(ctx context.Context, domain string, client net.IP) (bool, error)
}

// Config configures the engine.
type Config struct {
	AuthservID string
	SPF        spf.Config
	// HeloCheck adds an SPF check of the HELO identity, reported apart.
	HeloCheck bool
	// DKIMMaxSignatures caps the signatures verified (default 5).
	DKIMMaxSignatures int
	DMARC             DMARCConfig
	Limits            Limits
	// History, if set, makes "this network never sent passing mail for
	// the domain" a booster of the refusal rule.
	History History
	// ARC, if set, validates ARC chains (package arc).
	ARC ARCVerifier
}

// Limits cap the work spent on one message: the limits: section of the
// configuration file (settings.go).
type Limits struct {
	// DNSQueries caps the DNS lookups for one message (default 150).
	DNSQueries int `yaml:"dns_queries"`
	// HeaderBytes caps the header section (default 1 MiB).
	HeaderBytes int `yaml:"header_bytes"`
	// Deadline bounds one whole verification (default 20s).
	Deadline time.Duration `yaml:"deadline"`
}

// DMARCConfig configures DMARC evaluation and enforcement: the dmarc:
// section of the configuration file (settings.go).
type DMARCConfig struct {
	// Discovery is DiscoveryTreeWalk (default) or DiscoveryPSL.
	Discovery string `yaml:"discovery"`
	// PctZeroIsTesting treats a legacy pct=0 like t=y (RFC 9989 A.6).
	PctZeroIsTesting bool `yaml:"legacy_pct0_is_testing"`
	// Refusal is RefuseEvidence (default), RefuseHonor or RefuseQuarantine.
	Refusal string `yaml:"refusal"`
	// OnTempError is accept (default) or tempfail (451 4.7.5) for a
	// DMARC temperror.
	OnTempError string `yaml:"on_temperror"`
	// OnNoAuthor is accept (default) or reject for a message without a
	// usable From domain.
	OnNoAuthor string `yaml:"on_no_author"`
	// ReferenceURL is cited in refusals, if set.
	ReferenceURL string `yaml:"reference_url"`
	// MaxAuthorDomains caps the Author Domains verified (default 5); a
	// message with more gets TooManyAuthors: reject (default) or
	// quarantine.
	MaxAuthorDomains int    `yaml:"max_author_domains"`
	TooManyAuthors   string `yaml:"too_many_authors"`
	// PassHistory records the networks that deliver DMARC-passing mail
	// per domain (for PassHistoryKeep), a booster of the refusal rule.
	PassHistory     bool          `yaml:"pass_history"`
	PassHistoryKeep time.Duration `yaml:"pass_history_keep"`

	TrustedForwarders Override     `yaml:"trusted_forwarders"`
	LocalPolicy       Override     `yaml:"local_policy"`
	MailingLists      MailingLists `yaml:"mailing_lists"`
}

// Override is a configured override: the client networks, DKIM signing
// domains (trusted forwarders) or From domains (local policy) it applies
// to, and the disposition it gives.
type Override struct {
	Networks    []setting.Network `yaml:"networks"`
	DKIMDomains []string          `yaml:"dkim_domains,omitempty"`
	// ARCSealers are forwarders whose passing ARC chain vouches for the
	// authentication results they saw (trusted_forwarders only).
	ARCSealers  []string `yaml:"arc_sealers,omitempty"`
	FromDomains []string `yaml:"from_domains,omitempty"`
	Disposition string   `yaml:"disposition"` // PolicyNone (default) or PolicyQuarantine
}

// MailingLists configures the mailing-list override.
type MailingLists struct {
	Enabled bool `yaml:"enabled"`
	// Domains, if not empty, are the only list domains trusted (their
	// Organizational Domains are compared).
	Domains []string `yaml:"domains"`
}

// Engine verifies messages. It is safe for concurrent use.
type Engine struct {
	cfg  Config
	res  Resolver
	keys *keyCache
	// checks runs the checks that go alongside DKIM (SPF, iprev, each
	// author's DMARC) on workers whose stacks have grown already.
	checks *workers.Pool
}

// NewEngine makes an engine; zero config fields take their defaults.
func NewEngine(res Resolver, cfg Config) *Engine {
	if cfg.DKIMMaxSignatures <= 0 {
		cfg.DKIMMaxSignatures = 5
	}
	if cfg.Limits.DNSQueries <= 0 {
		cfg.Limits.DNSQueries = 150
	}
	if cfg.Limits.HeaderBytes <= 0 {
		cfg.Limits.HeaderBytes = 1 << 20
	}
	if cfg.Limits.Deadline <= 0 {
		cfg.Limits.Deadline = 20 * time.Second
	}
	if cfg.DMARC.Discovery == "" {
		cfg.DMARC.Discovery = DiscoveryTreeWalk
	}
	if cfg.DMARC.Refusal == "" {
		cfg.DMARC.Refusal = RefuseEvidence
	}
	if cfg.DMARC.MaxAuthorDomains <= 0 {
		cfg.DMARC.MaxAuthorDomains = 5
	}
	for _, o := range []*Override{&cfg.DMARC.TrustedForwarders, &cfg.DMARC.LocalPolicy} {
		if o.Disposition == "" {
			o.Disposition = PolicyNone
		}
	}
	return &Engine{cfg: cfg, res: res, keys: &keyCache{}, checks: workers.New(256, time.Minute)}
}

// AuthResult is the SMTP AUTH result (RFC 8601 2.7.4).
type AuthResult struct {
	Result string `json:"result"` // pass, or none when not authenticated
	User   string `json:"user"`
}

// DMARCStatus is a DMARC result word (RFC 9989 4.11, as RFC 8601 writes
// it).
type DMARCStatus string

// The DMARC results.
const (
	DMARCPass      DMARCStatus = "pass"
	DMARCFail      DMARCStatus = "fail"
	DMARCNone      DMARCStatus = "none"
	DMARCTempError DMARCStatus = "temperror"
	DMARCPermError DMARCStatus = "permerror"
)

// DMARCResult is the DMARC evaluation of one Author Domain.
type DMARCResult struct {
	Result       DMARCStatus `json:"result"`
	FromDomain   string      `json:"from_domain"`
	PolicyDomain string      `json:"policy_domain"`
	OrgDomain    string      `json:"org_domain"`
	// Policy is the value of the tag that applied (p, sp or np).
	Policy    string `json:"policy"`
	Discovery string `json:"discovery"`
	Testing   bool   `json:"testing"`
	// Disposition is what we apply, after t, overrides and the refusal
	// rule: none, quarantine or reject.
	Disposition     string   `json:"disposition"`
	Overrides       []string `json:"overrides"`
	RefusalEvidence []string `json:"refusal_evidence"`
	SPFAligned      bool     `json:"spf_aligned"`
	DKIMAligned     bool     `json:"dkim_aligned"`

	PolicyTag string `json:"-"` // p, sp or np
	// Record is the DMARC Policy Record found (nil without one): what
	// an aggregate report says was published, and where it goes (rua).
	Record *DMARCRecord `json:"-"`
	// Reason says why on none, temperror and permerror, and what the
	// overrides found; for logs and the A-R comment.
	Reason string `json:"-"`
	// Refusal is the reply text when Disposition is reject.
	Refusal string `json:"-"`
}

// Verdict is everything the engine concluded about a message.
type Verdict struct {
	SPF   spf.Outcome   `json:"spf"`
	DKIM  []DKIMResult  `json:"dkim"`
	ARC   ARCResult     `json:"arc"`
	DMARC DMARCResult   `json:"dmarc"`
	IPRev iprev.Outcome `json:"iprev"`
	Auth  AuthResult    `json:"auth"`
	// AuthenticationResults is the A-R field value, unfolded, without
	// leading space.
	AuthenticationResults string `json:"authentication_results"`
	Action                string `json:"action"`
	SMTPReply             string `json:"smtp_reply"` // "" for accept and quarantine

	// HeloSPF is the HELO check, when configured.
	HeloSPF *spf.Outcome `json:"-"`
	// AllDMARC holds one evaluation per Author Domain; DMARC is the one
	// that decided.
	AllDMARC []DMARCResult `json:"-"`
	// Results are the A-R results, for callers that fold the header.
	Results []authres.Result `json:"-"`
	Reply   *smtpreply.Reply `json:"-"`
	// DNSQueries counts the lookups spent on this message.
	DNSQueries int `json:"-"`
}

// Verify authenticates one message (header and body, LF or CRLF line
// endings). The error is only for failing to read msg; every other
// problem is part of the verdict.
func (e *Engine) Verify(ctx context.Context, env Envelope, msg io.ReadSeeker) (*Verdict, error) {
	if e.res == nil {
		panic("mailauth: Engine not made by NewEngine")
	}
	start := time.Now()
	ctx, cancel := deadline.With(ctx, start.Add(e.cfg.Limits.Deadline))
	defer cancel()

	v := &Verdict{DKIM: []DKIMResult{}, ARC: ARCResult{Result: ARCNone, Sealers: []string{}}}
	if env.ClientIP != nil {
		v.ARC.remoteIP = env.ClientIP.String()
	}
	br := getReader(msg)
	h, err := ReadHeader(br, e.cfg.Limits.HeaderBytes)
	putReader(br)
	if err != nil {
		if !errors.Is(err, ErrHeaderTooLarge) {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		v.refuseUnverified(e, env, err.Error(), &smtpreply.Reply{Code: 552, Enhanced: "5.3.4",
			Text: fmt.Sprintf("Message header too large (more than %d bytes); not accepted", e.cfg.Limits.HeaderBytes), Check: "limits"})
		return v, nil
	}
	if why := h.malformedFrom(); why != "" {
		// A From field a mail reader may show differently from what
		// we evaluate: see Header.malformedFrom.
		v.refuseUnverified(e, env, why, &smtpreply.Reply{Code: 550, Enhanced: "5.6.0", Check: "header",
			Text: "Message rejected: " + why + " (RFC 5322 2.2, 3.6.2); please correct the From header"})
		return v, nil
	}
	if _, err := msg.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("mailauth: rewind message: %w", err)
	}
	authors, noAuthor := AuthorDomains(h)
	if n := len(authors); n > e.cfg.DMARC.MaxAuthorDomains {
		why := fmt.Sprintf("the From header fields name %d domains, more than the %d this server verifies", n, e.cfg.DMARC.MaxAuthorDomains)
		if e.cfg.DMARC.TooManyAuthors == "quarantine" {
			v.refuseUnverified(e, env, why, nil)
			v.DMARC.Disposition = PolicyQuarantine
			v.DMARC.Overrides = []string{ReasonLocalPolicy}
			v.AllDMARC = []DMARCResult{v.DMARC}
			v.finish(e.cfg.AuthservID)
		} else {
			v.refuseUnverified(e, env, why, &smtpreply.Reply{Code: 550, Enhanced: "5.7.1", Check: "dmarc",
				Text: "Message rejected: " + why + " (RFC 9989 11.5); send it with fewer authors"})
		}
		return v, nil
	}

	budgets := []*budget{}
	newBudget := func(name string, frac float64, least int) *budget {
		b := e.newBudget(name, frac, least)
		budgets = append(budgets, b)
		return b
	}
	spfRes := newBudget("SPF", spfBudgetShare, 30)
	iprevRes := newBudget("iprev", iprevBudgetShare, 1+iprev.MaxPTRNames)
	dkimRes := newBudget("DKIM", dkimBudgetShare, e.cfg.DKIMMaxSignatures)
	authorRes := make([]*budget, len(authors))
	for i := range authors {
		authorRes[i] = newBudget("DMARC", authorBudgetShare, 30)
	}
	listRes := newBudget("mailing-list", listBudgetShare, 10)

	// Phase 1, all at once: SPF, iprev, DKIM, and each author's
	// policy discovery. Phase 2, per author: alignment and disposition.
	spfc := spf.New(spfRes, e.cfg.SPF)
	var checks sync.WaitGroup
	phase1 := make(chan struct{})
	// A panic in a check is a bug of ours, never a result: the message
	// is not judged on what the other checks found (a DMARC temperror
	// would accept a forgery under on_temperror: accept, a DKIM
	// temperror could refuse good mail for good). Verify returns an
	// InternalError and the caller answers 451.
	var internal atomic.Pointer[InternalError]
	guard := func(name string, fail func(string)) {
		if r := recover(); r != nil {
			internal.CompareAndSwap(nil, &InternalError{Check: name, Value: r, Stack: debug.Stack()})
			fail(fmt.Sprintf("internal error in %s: %v", name, r))
		}
	}
	checks.Add(2)
	e.checks.Go(func() {
		defer checks.Done()
		defer guard("SPF", func(s string) { v.SPF = spf.Outcome{Result: spf.TempError, Scope: spf.ScopeMailFrom, Error: s} })
		ctx, cancel := e.checkCtx(ctx, start, spfTimeShare)
		defer cancel()
		if env.ClientIP == nil {
			_, d := spf.MailFromIdentity(env.MailFrom, env.Helo)
			v.SPF = spf.Outcome{Result: spf.None, Scope: spf.ScopeMailFrom, Domain: d, Detail: "no client IP given"}
			return
		}
		v.SPF = spfc.CheckMailFrom(ctx, env.ClientIP, env.Helo, env.MailFrom)
		if e.cfg.HeloCheck && env.Helo != "" {
			h := spfc.CheckHelo(ctx, env.ClientIP, env.Helo)
			v.HeloSPF = &h
		}
	})
	e.checks.Go(func() {
		defer checks.Done()
		defer guard("iprev", func(s string) { v.IPRev = iprev.Outcome{Result: iprev.TempError, Error: s} })
		ctx, cancel := e.checkCtx(ctx, start, iprevTimeShare)
		defer cancel()
		v.IPRev = iprev.Check(ctx, iprevRes, env.ClientIP)
	})
	// DKIM on this goroutine (it reads msg; nothing else does), while
	// SPF, iprev and the authors' policy discovery run; then phase 2.
	runDKIM := func() {
		defer guard("DKIM", func(s string) { v.DKIM = []DKIMResult{{Result: DKIMTempError, Error: s}} })
		ctx, cancel := e.checkCtx(ctx, start, dkimTimeShare)
		defer cancel()
		v.DKIM = verifyDKIM(ctx, dkimRes, e.keys, h, msg, e.cfg.DKIMMaxSignatures)
		if e.cfg.ARC != nil && h.Get("ARC-Seal") != "" {
			if err := rewindBody(msg, h); err != nil {
				v.ARC = ARCResult{Result: ARCFail, Sealers: []string{}, Error: "reading the message: " + err.Error()}
				return
			}
			defer guard("ARC", func(s string) { v.ARC = ARCResult{Result: ARCFail, Sealers: []string{}, Error: s} })
			ip := v.ARC.remoteIP
			v.ARC = e.cfg.ARC.VerifyARC(ctx, dkimRes, h, bufio.NewReader(msg))
			v.ARC.remoteIP = ip
		}
	}
	v.Auth = e.auth(env)

	if len(authors) == 0 {
		runDKIM()
		checks.Wait()
		v.DMARC = DMARCResult{Result: DMARCPermError, Reason: "no DMARC validation possible: " + noAuthor,
			Discovery: e.cfg.DMARC.Discovery, Disposition: PolicyNone, Overrides: []string{}, RefusalEvidence: []string{}}
		v.AllDMARC = []DMARCResult{v.DMARC}
		if e.cfg.DMARC.OnNoAuthor == "reject" {
			v.Reply = &smtpreply.Reply{Code: 550, Enhanced: "5.7.1", Check: "dmarc",
				Text: "Message rejected: " + noAuthor + "; a message needs one From header field with an address (RFC 5322 3.6.2)"}
		}
	} else {
		d := newDMARCDNS(e.res, e.cfg.DMARC.Discovery)
		v.AllDMARC = make([]DMARCResult, len(authors))
		var wg sync.WaitGroup
		for i, a := range authors {
			wg.Add(1)
			e.checks.Go(func() {
				defer wg.Done()
				defer guard("DMARC", func(s string) {
					v.AllDMARC[i] = DMARCResult{Result: DMARCTempError, FromDomain: a, Reason: s, Discovery: e.cfg.DMARC.Discovery,
						Disposition: PolicyNone, Overrides: []string{}, RefusalEvidence: []string{}}
				})
				ev := &evaluation{e: e, ctx: ctx, start: start, d: d.with(authorRes[i]), list: d.with(listRes),
					spfc: spf.New(authorRes[i], e.cfg.SPF), env: env, h: h, v: v, fromDomain: a}
				v.AllDMARC[i] = ev.author(phase1)
			})
		}
		runDKIM()
		checks.Wait()
		close(phase1)
		wg.Wait()
		e.decideDMARC(v)
	}
	if ie := internal.Load(); ie != nil {
		return nil, ie
	}
	for _, b := range budgets {
		v.DNSQueries += b.used()
	}
	v.finish(e.cfg.AuthservID)
	return v, nil
}

// rewindBody positions msg at the start of the body that follows h.
func rewindBody(msg io.ReadSeeker, h Header) error {
	_, err := msg.Seek(int64(h.Size), io.SeekStart)
	return err
}

// InternalError is a panic inside one of the checks of Verify: a bug,
// after which the message must be answered 451, not judged.
type InternalError struct {
	Check string // SPF, iprev, DKIM, DMARC
	Value any    // what panicked
	Stack []byte
}

func (e *InternalError) Error() string {
	return fmt.Sprintf("mailauth: internal error in %s: %v", e.Check, e.Value)
}

// refuseUnverified fills a verdict for a message that is not verified
// at all (why says why); reply, if set, refuses it.
func (v *Verdict) refuseUnverified(e *Engine, env Envelope, why string, reply *smtpreply.Reply) {
	v.SPF = spf.Outcome{Result: spf.None, Scope: spf.ScopeMailFrom}
	v.IPRev = iprev.Outcome{Result: iprev.None}
	v.Auth = e.auth(env)
	v.DMARC = DMARCResult{Result: DMARCPermError, Reason: why, Discovery: e.cfg.DMARC.Discovery, Disposition: PolicyNone, Overrides: []string{}, RefusalEvidence: []string{}}
	v.Reply = reply
	v.finish(e.cfg.AuthservID)
}

func (e *Engine) auth(env Envelope) AuthResult {
	if env.AuthUser == "" {
		return AuthResult{Result: "none"}
	}
	return AuthResult{Result: "pass", User: env.AuthUser}
}

// decideDMARC applies the strictest outcome of the Author Domains (RFC
// 9989 11.5).
func (e *Engine) decideDMARC(v *Verdict) {
	best := 0
	for i := range v.AllDMARC {
		if stricter(v.AllDMARC[i], v.AllDMARC[best]) {
			best = i
		}
	}
	v.DMARC = v.AllDMARC[best]
	switch {
	case v.DMARC.Disposition == PolicyReject:
		v.Reply = &smtpreply.Reply{Code: 550, Enhanced: "5.7.1", Text: v.DMARC.Refusal, Check: "dmarc"}
	case v.DMARC.Result == DMARCTempError && e.cfg.DMARC.OnTempError == "tempfail":
		v.Reply = &smtpreply.Reply{Code: 451, Enhanced: "4.7.5", Check: "dmarc",
			Text: "Temporary DNS failure while checking DMARC for " + v.DMARC.FromDomain + "; please try again later"}
	}
}

// stricter reports whether a decides over b: a stricter disposition, or
// at equal disposition a failure over anything else.
func stricter(a, b DMARCResult) bool {
	rank := map[string]int{PolicyNone: 0, PolicyQuarantine: 1, PolicyReject: 2}
	if rank[a.Disposition] != rank[b.Disposition] {
		return rank[a.Disposition] > rank[b.Disposition]
	}
	resRank := map[DMARCStatus]int{DMARCFail: 4, DMARCTempError: 3, DMARCPermError: 2, DMARCNone: 1, DMARCPass: 0}
	return resRank[a.Result] > resRank[b.Result]
}

// evaluation is the DMARC evaluation of one Author Domain of a message.
type evaluation struct {
	e     *Engine
	ctx   context.Context
	start time.Time
	d     *dmarcDNS // the author's budget
	list  *dmarcDNS // the mailing-list check's budget
	spfc  *spf.Checker
	env   Envelope
	h     Header
	v     *Verdict // read only after phase 1
	// fromDomain is the Author Domain evaluated.
	fromDomain string
}

// author evaluates one Author Domain (RFC 9989 5.3): policy discovery at
// once, the rest when phase1 is closed (SPF, iprev and DKIM done).
func (ev *evaluation) author(phase1 <-chan struct{}) DMARCResult {
	cfg := ev.e.cfg.DMARC
	author := ev.fromDomain
	r := DMARCResult{FromDomain: author, Discovery: cfg.Discovery, Disposition: PolicyNone,
		Overrides: []string{}, RefusalEvidence: []string{}}
	pf, err := ev.d.discover(ev.ctx, author)
	<-phase1
	r.OrgDomain = pf.org
	if err != nil {
		r.Result, r.Reason = DMARCTempError, "DMARC record lookup: "+err.Error()
		return r
	}
	if pf.rec == nil {
		r.Result, r.Reason = DMARCNone, pf.why
		return r
	}
	r.PolicyDomain = pf.domain
	rec := pf.rec
	r.Record = rec
	r.Policy, r.PolicyTag, _ = ev.d.policyFor(ev.ctx, author, pf)
	r.Testing = rec.Testing || (cfg.PctZeroIsTesting && rec.PctZero)

	// Identifier alignment (RFC 9989 4.4, 4.10.2).
	var tempErr error
	mf := ev.v.SPF
	spfDomain := strings.ToLower(mf.Domain)
	if mf.Result == spf.Pass || mf.Result == spf.TempError {
		ok, err := ev.d.aligned(ev.ctx, rec.ASPF, author, pf.org, spfDomain)
		switch {
		case err != nil:
			tempErr = err
		case ok && mf.Result == spf.Pass:
			r.SPFAligned = true
		case ok:
			tempErr = errors.New("SPF temperror for an aligned domain: " + mf.Error)
		}
	}
	for _, s := range ev.v.DKIM {
		if s.Result != DKIMPass && s.Result != DKIMTempError {
			continue
		}
		ok, err := ev.d.aligned(ev.ctx, rec.ADKIM, author, pf.org, s.Domain)
		switch {
		case err != nil:
			tempErr = err
		case ok && s.Result == DKIMPass:
			r.DKIMAligned = true
		case ok:
			tempErr = errors.New("DKIM temperror for aligned d=" + s.Domain + ": " + s.Error)
		}
	}
	switch {
	case r.SPFAligned || r.DKIMAligned:
		r.Result = DMARCPass
		return r
	case tempErr != nil:
		// RFC 9989 5.3.6: without the answer, neither pass nor fail.
		r.Result, r.Reason = DMARCTempError, tempErr.Error()
		return r
	}
	r.Result = DMARCFail
	ev.dispose(&r)
	return r
}
