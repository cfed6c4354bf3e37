package mailauth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/spf"
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

// Refusal modes for DMARC p=reject failures.
const (
	RefuseEvidence   = "evidence"   // refuse only with evidence of forgery (default)
	RefuseHonor      = "honor"      // refuse every p=reject failure (not RFC 9989 7.4, 8)
	RefuseQuarantine = "quarantine" // never refuse
)

// RFC 9990 override reasons (policy_override_reason).
const (
	ReasonLocalPolicy      = "local_policy"
	ReasonMailingList      = "mailing_list"
	ReasonTrustedForwarder = "trusted_forwarder"
	ReasonPolicyTestMode   = "policy_test_mode"
	ReasonOther            = "other"
)

// Refusal evidence: the boosters of the refusal rule.
const (
	EvidenceAuthorSPFFail   = "author_spf_fail"    // the author's org domain's SPF fails for the client
	EvidenceMailFromSPFFail = "mail_from_spf_fail" // MAIL FROM in the author's org domain, and its SPF fails
	EvidenceIPRevFail       = "iprev_fail"         // the client's reverse DNS does not confirm
	EvidenceNoPassHistory   = "no_pass_history"    // this network never delivered DMARC-passing mail for the domain
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
	// DNSBudget caps the DNS lookups for one message (default 150).
	DNSBudget int
	// HeaderBytes caps the header section (default 1 MiB).
	HeaderBytes int
	// Deadline bounds one whole verification (default 20s).
	Deadline time.Duration
	// History, if set, makes "this network never sent passing mail for
	// the domain" a booster of the refusal rule.
	History History
}

// DMARCConfig configures DMARC evaluation and enforcement.
type DMARCConfig struct {
	Discovery string // DiscoveryTreeWalk (default) or DiscoveryPSL
	// PctZeroIsTesting treats a legacy pct=0 like t=y (RFC 9989 A.6).
	PctZeroIsTesting bool
	Refusal          string // RefuseEvidence (default), RefuseHonor, RefuseQuarantine
	// TempfailOnTempError answers 451 4.7.5 on a DMARC temperror instead
	// of accepting.
	TempfailOnTempError bool
	// RejectNoAuthor refuses messages without a usable From domain.
	RejectNoAuthor bool
	// ReferenceURL is cited in refusals, if set.
	ReferenceURL string
	// MaxAuthorDomains caps the Author Domains verified (default 5); a
	// message with more is refused, or quarantined if
	// TooManyAuthorsQuarantine.
	MaxAuthorDomains         int
	TooManyAuthorsQuarantine bool

	TrustedForwarders Override
	LocalPolicy       Override
	MailingLists      MailingLists
}

// Override is a configured override: the client networks, DKIM signing
// domains (trusted forwarders) or From domains (local policy) it applies
// to, and the disposition it gives.
type Override struct {
	Networks    []netip.Prefix
	DKIMDomains []string
	FromDomains []string
	Disposition string // PolicyNone (default) or PolicyQuarantine
}

// MailingLists configures the mailing-list override.
type MailingLists struct {
	Enabled bool
	// Domains, if not empty, are the only list domains trusted (their
	// Organizational Domains are compared).
	Domains []string
}

// Engine verifies messages. It is safe for concurrent use.
type Engine struct {
	cfg Config
	res Resolver
}

// NewEngine makes an engine; zero config fields take their defaults.
func NewEngine(res Resolver, cfg Config) *Engine {
	if cfg.DKIMMaxSignatures <= 0 {
		cfg.DKIMMaxSignatures = 5
	}
	if cfg.DNSBudget <= 0 {
		cfg.DNSBudget = 150
	}
	if cfg.HeaderBytes <= 0 {
		cfg.HeaderBytes = 1 << 20
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 20 * time.Second
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
	return &Engine{cfg: cfg, res: res}
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

// How the deadline and the DNS budget of one message are shared. Every
// check runs at the same time, under its own share of both, so that no
// check can spend what another needs: the checks whose DNS a sender
// chooses (SPF of his MAIL FROM, the names his address's PTR record
// lists, his DKIM keys, the list domains he writes) end at their share,
// and the DMARC policy discovery of each Author Domain, the lookup that
// decides, has the whole deadline and a budget of its own.
const (
	spfTimeShare   = 0.40
	iprevTimeShare = 0.25
	dkimTimeShare  = 0.50
	listTimeShare  = 0.15

	spfBudgetShare    = 0.40
	iprevBudgetShare  = 0.10
	dkimBudgetShare   = 0.10
	authorBudgetShare = 0.30 // each Author Domain
	listBudgetShare   = 0.10
)

// shareOf returns frac of n, at least least.
func shareOf(n int, frac float64, least int) int {
	return max(int(float64(n)*frac), least)
}

// checkCtx returns a context that ends at frac of the message deadline.
func (e *Engine) checkCtx(ctx context.Context, start time.Time, frac float64) (context.Context, context.CancelFunc) {
	return context.WithDeadline(ctx, start.Add(time.Duration(float64(e.cfg.Deadline)*frac)))
}

// newBudget gives a check frac of the DNS budget, at least least lookups.
func (e *Engine) newBudget(name string, frac float64, least int) *budget {
	n := shareOf(e.cfg.DNSBudget, frac, least)
	b := &budget{Resolver: e.res, check: name, max: n}
	b.left.Store(int64(n))
	return b
}

// Verify authenticates one message (header and body, LF or CRLF line
// endings). The error is only for failing to read msg; every other
// problem is part of the verdict.
func (e *Engine) Verify(ctx context.Context, env Envelope, msg io.ReadSeeker) (*Verdict, error) {
	if e.res == nil {
		panic("mailauth: Engine not made by NewEngine")
	}
	start := time.Now()
	ctx, cancel := context.WithDeadline(ctx, start.Add(e.cfg.Deadline))
	defer cancel()

	v := &Verdict{DKIM: []DKIMResult{}}
	h, err := ReadHeader(bufio.NewReader(msg), e.cfg.HeaderBytes)
	if err != nil {
		if !errors.Is(err, ErrHeaderTooLarge) {
			return nil, fmt.Errorf("mailauth: %w", err)
		}
		v.refuseUnverified(e, env, err.Error(), &smtpreply.Reply{Code: 552, Enhanced: "5.3.4",
			Text: fmt.Sprintf("Message header too large (more than %d bytes); not accepted", e.cfg.HeaderBytes), Check: "limits"})
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
		if e.cfg.DMARC.TooManyAuthorsQuarantine {
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
	go func() {
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
	}()
	go func() {
		defer checks.Done()
		defer guard("iprev", func(s string) { v.IPRev = iprev.Outcome{Result: iprev.TempError, Error: s} })
		ctx, cancel := e.checkCtx(ctx, start, iprevTimeShare)
		defer cancel()
		v.IPRev = iprev.Check(ctx, iprevRes, env.ClientIP)
	}()
	// DKIM on this goroutine (it reads msg; nothing else does), while
	// SPF, iprev and the authors' policy discovery run; then phase 2.
	runDKIM := func() {
		defer guard("DKIM", func(s string) { v.DKIM = []DKIMResult{{Result: DKIMTempError, Error: s}} })
		ctx, cancel := e.checkCtx(ctx, start, dkimTimeShare)
		defer cancel()
		v.DKIM = verifyDKIM(ctx, dkimRes, h, msg, e.cfg.DKIMMaxSignatures)
	}
	v.Auth = e.auth(env)

	if len(authors) == 0 {
		runDKIM()
		checks.Wait()
		v.DMARC = DMARCResult{Result: DMARCPermError, Reason: "no DMARC validation possible: " + noAuthor,
			Discovery: e.cfg.DMARC.Discovery, Disposition: PolicyNone, Overrides: []string{}, RefusalEvidence: []string{}}
		v.AllDMARC = []DMARCResult{v.DMARC}
		if e.cfg.DMARC.RejectNoAuthor {
			v.Reply = &smtpreply.Reply{Code: 550, Enhanced: "5.7.1", Check: "dmarc",
				Text: "Message rejected: " + noAuthor + "; a message needs one From header field with an address (RFC 5322 3.6.2)"}
		}
	} else {
		d := newDMARCDNS(e.res, e.cfg.DMARC.Discovery)
		v.AllDMARC = make([]DMARCResult, len(authors))
		var wg sync.WaitGroup
		for i, a := range authors {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer guard("DMARC", func(s string) {
					v.AllDMARC[i] = DMARCResult{Result: DMARCTempError, FromDomain: a, Reason: s, Discovery: e.cfg.DMARC.Discovery,
						Disposition: PolicyNone, Overrides: []string{}, RefusalEvidence: []string{}}
				})
				ev := &evaluation{e: e, ctx: ctx, start: start, d: d.with(authorRes[i]), list: d.with(listRes),
					spfc: spf.New(authorRes[i], e.cfg.SPF), env: env, h: h, v: v, fromDomain: a}
				v.AllDMARC[i] = ev.author(phase1)
			}()
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
	case v.DMARC.Result == DMARCTempError && e.cfg.DMARC.TempfailOnTempError:
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

// dispose decides what to apply to a DMARC failure: t (and legacy
// pct=0), then the overrides, then the refusal rule.
func (ev *evaluation) dispose(r *DMARCResult) {
	cfg := ev.e.cfg.DMARC
	published := r.Policy
	disp := published
	var notes []string
	if published == PolicyNone {
		return
	}
	// RFC 9989 4.7, t=y: one level below the published policy.
	if r.Testing {
		if disp == PolicyReject {
			disp = PolicyQuarantine
		} else {
			disp = PolicyNone
		}
		r.Overrides = append(r.Overrides, ReasonPolicyTestMode)
	}
	lower := func(to string) {
		if rankPolicy(to) < rankPolicy(disp) {
			disp = to
		}
	}
	if why := ev.localPolicy(r.FromDomain); why != "" {
		r.Overrides = append(r.Overrides, ReasonLocalPolicy)
		notes = append(notes, why)
		lower(cfg.LocalPolicy.Disposition)
	}
	if why := ev.trustedForwarder(); why != "" {
		r.Overrides = append(r.Overrides, ReasonTrustedForwarder)
		notes = append(notes, why)
		lower(cfg.TrustedForwarders.Disposition)
	}
	if published == PolicyReject {
		if why := ev.mailingList(r.FromDomain); why != "" {
			r.Overrides = append(r.Overrides, ReasonMailingList)
			notes = append(notes, why)
			lower(PolicyQuarantine)
		}
	}
	if disp == PolicyReject {
		disp = ev.refusal(r, &notes)
	}
	r.Disposition = disp
	r.Reason = strings.Join(notes, "; ")
}

func rankPolicy(p string) int {
	switch p {
	case PolicyReject:
		return 2
	case PolicyQuarantine:
		return 1
	}
	return 0
}

// refusal applies the rule for refusing a p=reject failure (RFC 9989 5.4,
// 7.4 and 8 forbid refusing on the policy alone). In evidence mode:
//
//	refuse ⇔ no DKIM-Signature of the author's organizational domain,
//	         valid or not, ∧ at least one booster holds.
//
// The caller has established: effective policy reject, result fail, no
// override. Otherwise the failure is quarantined with reason other.
func (ev *evaluation) refusal(r *DMARCResult, notes *[]string) string {
	switch ev.e.cfg.DMARC.Refusal {
	case RefuseQuarantine:
		r.Overrides = append(r.Overrides, ReasonOther)
		*notes = append(*notes, "local policy: DMARC failures are never refused")
		return PolicyQuarantine
	case RefuseHonor:
		r.Refusal = ev.refusalText(r, nil)
		return PolicyReject
	}
	org := r.OrgDomain
	if org == "" {
		org = r.FromDomain
	}
	r.RefusalEvidence = ev.boosters(org)
	if orgSig := ev.orgSignature(org); orgSig != "" || len(r.RefusalEvidence) == 0 {
		r.Overrides = append(r.Overrides, ReasonOther)
		why := "no evidence of forgery"
		if orgSig != "" {
			why += " (signed by " + orgSig + ", though the signature does not verify)"
		}
		*notes = append(*notes, why)
		return PolicyQuarantine
	}
	r.Refusal = ev.refusalText(r, r.RefusalEvidence)
	return PolicyReject
}

// orgSignature returns the d= of a DKIM-Signature within the author's
// Organizational Domain, whatever its result, or "".
func (ev *evaluation) orgSignature(org string) string {
	for _, s := range ev.v.DKIM {
		if s.Domain == org || strings.HasSuffix(s.Domain, "."+org) {
			return s.Domain
		}
	}
	return ""
}

// boosters returns the evidence of forgery that holds.
func (ev *evaluation) boosters(org string) []string {
	out := []string{}
	ip := ev.env.ClientIP
	mf := ev.v.SPF
	spfDomain := strings.ToLower(mf.Domain)
	inOrg := spfDomain == org || strings.HasSuffix(spfDomain, "."+org)
	// The author's organizational domain says this host may not send
	// for it.
	if ip != nil {
		var r spf.Outcome
		if spfDomain == org && mf.Scope == spf.ScopeMailFrom {
			r = mf
		} else {
			r = ev.spfc.CheckMailFrom(ev.ctx, ip, ev.env.Helo, "postmaster@"+org)
		}
		if r.Result == spf.Fail {
			out = append(out, EvidenceAuthorSPFFail)
		}
	}
	if inOrg && mf.Result == spf.Fail && mf.Scope == spf.ScopeMailFrom {
		out = append(out, EvidenceMailFromSPFFail)
	}
	if ev.v.IPRev.Result == iprev.Fail {
		out = append(out, EvidenceIPRevFail)
	}
	if h := ev.e.cfg.History; h != nil && ip != nil {
		// The author domain, as recorded (it is what passed).
		if passed, err := h.Passed(ev.ctx, ev.fromDomain, ip); err == nil && !passed {
			out = append(out, EvidenceNoPassHistory)
		}
	}
	return out
}

// refusalText words the refusal so that the sender's operator sees why.
func (ev *evaluation) refusalText(r *DMARCResult, evidence []string) string {
	var why []string
	ip := "the sending host"
	if ev.env.ClientIP != nil {
		ip = ev.env.ClientIP.String()
	}
	for _, e := range evidence {
		switch e {
		case EvidenceAuthorSPFFail:
			why = append(why, "its SPF record does not permit "+ip)
		case EvidenceMailFromSPFFail:
			if !strings.EqualFold(ev.v.SPF.Domain, r.OrgDomain) || !slices.Contains(evidence, EvidenceAuthorSPFFail) {
				why = append(why, "the envelope sender domain "+ev.v.SPF.Domain+" fails SPF for "+ip)
			}
		case EvidenceIPRevFail:
			why = append(why, ip+" has no matching reverse DNS")
		case EvidenceNoPassHistory:
			why = append(why, ip+" never sent authenticated mail for "+r.FromDomain+" here")
		}
	}
	if evidence == nil {
		switch {
		case ev.v.SPF.Result == spf.Pass:
			why = append(why, "SPF passes only for "+ev.v.SPF.Domain)
		default:
			why = append(why, "SPF "+string(ev.v.SPF.Result)+" for "+ip)
		}
	}
	why = append(why, "no DKIM signature of "+r.FromDomain)
	t := fmt.Sprintf("Message rejected: %s publishes DMARC policy reject and this message is not authenticated by %s (%s)",
		r.PolicyDomain, r.FromDomain, strings.Join(why, "; "))
	if u := ev.e.cfg.DMARC.ReferenceURL; u != "" {
		t += "; see " + u
	}
	return t
}

// localPolicy reports why the local allowlist applies, or "".
func (ev *evaluation) localPolicy(author string) string {
	o := ev.e.cfg.DMARC.LocalPolicy
	if p, ok := InNetworks(ev.env.ClientIP, o.Networks); ok {
		return "client in local allowlist " + p.String()
	}
	for _, d := range o.FromDomains {
		if strings.EqualFold(d, author) {
			return "From domain " + author + " in local allowlist"
		}
	}
	return ""
}

// trustedForwarder reports why a configured forwarder applies, or "".
func (ev *evaluation) trustedForwarder() string {
	o := ev.e.cfg.DMARC.TrustedForwarders
	if p, ok := InNetworks(ev.env.ClientIP, o.Networks); ok {
		return "trusted forwarder network " + p.String()
	}
	for _, s := range ev.v.DKIM {
		if s.Result != DKIMPass {
			continue
		}
		for _, d := range o.DKIMDomains {
			if s.Domain == strings.ToLower(d) || strings.HasSuffix(s.Domain, "."+strings.ToLower(d)) {
				return "trusted forwarder signature d=" + s.Domain
			}
		}
	}
	return ""
}

// InNetworks returns the first of nets that contains ip.
func InNetworks(ip net.IP, nets []netip.Prefix) (netip.Prefix, bool) {
	if ip == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// mailingList reports the evidence that the message came through a
// mailing list that vouches for it, or "": a List-Id or List-Post header
// (RFC 2919, RFC 2369) naming a list whose Organizational Domain also
// authenticated the message, by an SPF pass for the MAIL FROM or a DKIM
// pass. The headers alone prove nothing: anyone can write them.
func (ev *evaluation) mailingList(author string) string {
	cfg := ev.e.cfg.DMARC.MailingLists
	if !cfg.Enabled {
		return ""
	}
	// The list domains are the sender's to write, and their DNS his to
	// run: a share of the deadline and a budget of their own.
	ctx, cancel := context.WithTimeout(ev.ctx, time.Duration(float64(ev.e.cfg.Deadline)*listTimeShare))
	defer cancel()
	lists := listDomains(ev.h)
	if len(lists) > maxListDomains {
		lists = lists[:maxListDomains]
	}
	for _, ld := range lists {
		lorg, err := ev.list.OrgDomain(ctx, ld)
		if err != nil || lorg == "" {
			continue
		}
		if len(cfg.Domains) > 0 && !domainListed(ld, lorg, cfg.Domains) {
			continue
		}
		if lorg == author {
			continue // the author's own domain cannot vouch for itself here
		}
		if ev.v.SPF.Result == spf.Pass {
			if o, err := ev.list.OrgDomain(ctx, strings.ToLower(ev.v.SPF.Domain)); err == nil && o == lorg {
				return "list " + ld + " authenticated by SPF for " + ev.v.SPF.Domain
			}
		}
		for _, s := range ev.v.DKIM {
			if s.Result != DKIMPass {
				continue
			}
			if o, err := ev.list.OrgDomain(ctx, s.Domain); err == nil && o == lorg {
				return "list " + ld + " authenticated by DKIM d=" + s.Domain
			}
		}
	}
	return ""
}

// maxListDomains caps the list domains the mailing-list check considers.
const maxListDomains = 5

func domainListed(ld, lorg string, domains []string) bool {
	for _, d := range domains {
		d = strings.ToLower(d)
		if ld == d || lorg == d || strings.HasSuffix(ld, "."+d) {
			return true
		}
	}
	return false
}

// listDomains returns the domains named by List-Id (the list-id without
// its first label, RFC 2919 2) and List-Post (mailto: domains, RFC 2369).
func listDomains(h Header) []string {
	var out []string
	seen := map[string]bool{}
	add := func(d string) {
		d, err := ToASCII(d)
		if err == nil && strings.Contains(d, ".") && !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, v := range h.Values("List-Id") {
		id := v
		if i := strings.LastIndexByte(v, '<'); i >= 0 {
			if j := strings.IndexByte(v[i:], '>'); j > 0 {
				id = v[i+1 : i+j]
			}
		}
		id = strings.TrimSpace(id)
		if _, rest, ok := strings.Cut(id, "."); ok {
			add(rest)
		}
	}
	for _, v := range h.Values("List-Post") {
		for _, part := range strings.Split(v, ",") {
			part = strings.Trim(strings.TrimSpace(part), "<>")
			if !strings.HasPrefix(strings.ToLower(part), "mailto:") {
				continue
			}
			addr := part[len("mailto:"):]
			if i := strings.IndexByte(addr, '?'); i >= 0 {
				addr = addr[:i]
			}
			if _, d, ok := cutAt(addr); ok {
				add(d)
			}
		}
	}
	return out
}

// finish sets the action, the reply and the A-R header.
func (v *Verdict) finish(authservID string) {
	switch {
	case v.Reply != nil && v.Reply.Temporary():
		v.Action = ActionTempfail
	case v.Reply != nil:
		v.Action = ActionReject
	case v.DMARC.Disposition == PolicyQuarantine:
		v.Action = ActionQuarantine
	default:
		v.Action = ActionAccept
	}
	if v.Reply != nil {
		v.SMTPReply = v.Reply.String()
	}
	v.Results = v.authResults()
	v.AuthenticationResults = authres.Format(authservID, v.Results)
}

// authResults builds the A-R results: iprev, auth, spf, dkim, dmarc.
func (v *Verdict) authResults() []authres.Result {
	var rs []authres.Result
	if v.IPRev.Result != iprev.None && v.IPRev.Result != "" {
		r := authres.Result{Method: "iprev", Value: string(v.IPRev.Result)}
		if v.IPRev.Result != iprev.Pass {
			r.Reason = v.IPRev.Error
		}
		ipProp := authres.Prop{Type: "policy", Property: "iprev", Value: v.IPRev.IP}
		if v.IPRev.Name != "" {
			ipProp.Comment = v.IPRev.Name
		}
		r.Props = append(r.Props, ipProp)
		rs = append(rs, r)
	}
	if v.Auth.Result == "pass" {
		rs = append(rs, authres.Result{Method: "auth", Value: "pass",
			Props: []authres.Prop{{Type: "smtp", Property: "auth", Value: v.Auth.User}}})
	}
	res := authres.Result{Method: "spf", Value: string(v.SPF.Result)}
	switch {
	case v.SPF.Result == spf.Fail && v.SPF.Explanation != "":
		res.Comment = v.SPF.Explanation
	case v.SPF.Error != "":
		res.Reason = v.SPF.Error
	case v.SPF.Detail != "":
		res.Comment = v.SPF.Detail
	}
	if v.SPF.Identity != "" {
		res.Props = append(res.Props, authres.Prop{Type: "smtp", Property: "mailfrom", Value: v.SPF.Identity})
	} else if v.SPF.Domain != "" {
		res.Props = append(res.Props, authres.Prop{Type: "smtp", Property: "mailfrom", Value: v.SPF.Domain})
	}
	rs = append(rs, res)
	if h := v.HeloSPF; h != nil {
		r := authres.Result{Method: "spf", Value: string(h.Result), Reason: h.Error,
			Props: []authres.Prop{{Type: "smtp", Property: "helo", Value: h.Domain}}}
		rs = append(rs, r)
	}
	if len(v.DKIM) == 0 {
		rs = append(rs, authres.Result{Method: "dkim", Value: string(DKIMNone), Comment: "no signatures"})
	}
	notChecked := 0
	for _, s := range v.DKIM {
		if s.notChecked {
			// One entry for them all: a message with 500 signatures
			// must not make a header too large to add (issue 10.11).
			notChecked++
			continue
		}
		r := authres.Result{Method: "dkim", Value: string(s.Result), Reason: s.Error}
		if s.KeyBits > 0 {
			r.Comment = fmt.Sprintf("%d-bit key", s.KeyBits)
		}
		for _, p := range []struct{ k, v string }{{"d", s.Domain}, {"i", s.Identifier}, {"s", s.Selector}, {"a", s.Algorithm}, {"b", s.B}} {
			if p.v != "" {
				r.Props = append(r.Props, authres.Prop{Type: "header", Property: p.k, Value: p.v})
			}
		}
		rs = append(rs, r)
	}
	if notChecked > 0 {
		rs = append(rs, authres.Result{Method: "dkim", Value: string(DKIMNeutral),
			Comment: fmt.Sprintf("%d more signatures not checked", notChecked)})
	}
	for _, d := range v.AllDMARC {
		r := authres.Result{Method: "dmarc", Value: string(d.Result)}
		var c []string
		if d.Policy != "" {
			c = append(c, d.PolicyTag+"="+d.Policy)
			c = append(c, "applied "+d.Disposition)
		}
		if len(d.Overrides) > 0 {
			c = append(c, "overrides "+strings.Join(d.Overrides, " "))
		}
		if len(d.RefusalEvidence) > 0 && d.Disposition == PolicyReject {
			c = append(c, "evidence "+strings.Join(d.RefusalEvidence, " "))
		}
		if d.Reason != "" {
			c = append(c, d.Reason)
		}
		r.Comment = strings.Join(c, ", ")
		if d.FromDomain != "" {
			r.Props = append(r.Props, authres.Prop{Type: "header", Property: "from", Value: d.FromDomain})
		}
		if d.Policy != "" {
			r.Props = append(r.Props, authres.Prop{Type: "policy", Property: "dmarc", Value: d.Disposition})
		}
		rs = append(rs, r)
	}
	return rs
}

// budget caps the DNS lookups of one message. Past the cap, lookups fail
// as temporary errors: never a permanent verdict from an attacker's
// expensive message.
type budget struct {
	Resolver
	check string // whose budget
	max   int
	left  atomic.Int64
}

func (b *budget) take(name string) error {
	if b.left.Add(-1) < 0 {
		return &net.DNSError{Err: fmt.Sprintf("%s budget of %d DNS lookups for this message exhausted", b.check, b.max), Name: name, IsTemporary: true}
	}
	return nil
}

// used returns the lookups made (or refused past the budget).
func (b *budget) used() int { return b.max - int(max(b.left.Load(), 0)) }

func (b *budget) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if err := b.take(name); err != nil {
		return nil, err
	}
	return b.Resolver.LookupTXT(ctx, name)
}

func (b *budget) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if err := b.take(name); err != nil {
		return nil, err
	}
	return b.Resolver.LookupMX(ctx, name)
}

func (b *budget) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if err := b.take(host); err != nil {
		return nil, err
	}
	return b.Resolver.LookupIPAddr(ctx, host)
}

func (b *budget) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	if err := b.take(addr); err != nil {
		return nil, err
	}
	return b.Resolver.LookupAddr(ctx, addr)
}

func (b *budget) Exists(ctx context.Context, name string) (bool, error) {
	if err := b.take(name); err != nil {
		return false, err
	}
	return b.Resolver.Exists(ctx, name)
}
