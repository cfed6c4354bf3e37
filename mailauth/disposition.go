package mailauth

import (
	"fmt"
	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/deadline"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wehr/wehr/iprev"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/spf"
)

// Disposition: what a DMARC failure leads to (RFC 9989 section 8), after
// the domain's t= test mode, the overrides with their RFC 9990 reasons
// (trusted forwarders, local policy, mailing lists) and wehr's
// evidence-based refusal rule.

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
	if p, ok := inNetworks(ev.env.ClientIP, o.Networks); ok {
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
	if p, ok := inNetworks(ev.env.ClientIP, o.Networks); ok {
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
	return ev.trustedARC(o.ARCSealers)
}

// trustedARC reports why a trusted sealer's ARC chain vouches for the
// message, or "": the chain passes, its newest seal (the hop that
// handed us the message) is a trusted sealer's, and the
// ARC-Authentication-Results that sealer sealed say the author's domain
// passed DMARC, or DKIM or SPF aligned with it. A chain that fails, an
// untrusted sealer, or a trusted sealer's results about another domain
// never help: a forger can seal a chain of his own.
func (ev *evaluation) trustedARC(trusted []string) string {
	a := ev.v.ARC
	if len(trusted) == 0 || a.Result != ARCPass || a.Instances == 0 || len(a.AAR) != a.Instances {
		return ""
	}
	sealer := a.Sealers[a.Instances-1]
	ok := false
	for _, t := range trusted {
		t = strings.ToLower(strings.TrimSuffix(t, "."))
		if sealer == t || strings.HasSuffix(sealer, "."+t) {
			ok = true
		}
	}
	if !ok {
		return ""
	}
	aar := a.AAR[a.Instances-1]
	if _, rest, found := strings.Cut(aar, ";"); found {
		aar = rest // the i= tag
	}
	_, results, err := authres.Parse(aar)
	if err != nil {
		return ""
	}
	author := strings.ToLower(ev.fromDomain)
	aligned := func(d string) bool {
		d = strings.ToLower(strings.TrimSuffix(d, "."))
		if i := strings.LastIndexByte(d, '@'); i >= 0 {
			d = d[i+1:]
		}
		return d != "" && (d == author || pslOrgDomain(d) == pslOrgDomain(author))
	}
	for _, r := range results {
		if !strings.EqualFold(r.Value, "pass") {
			continue
		}
		var d string
		switch strings.ToLower(r.Method) {
		case "dmarc":
			d, _ = r.Prop("header", "from")
			if !strings.EqualFold(strings.TrimSuffix(d, "."), author) {
				continue
			}
		case "dkim":
			d, _ = r.Prop("header", "d")
		case "spf":
			d, _ = r.Prop("smtp", "mailfrom")
		default:
			continue
		}
		if aligned(d) {
			return fmt.Sprintf("trusted ARC sealer %s saw %s=pass for %s (i=%d)", sealer, strings.ToLower(r.Method), d, a.Instances)
		}
	}
	return ""
}

// inNetworks returns the first of nets that contains ip.
func inNetworks(ip net.IP, nets []setting.Network) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	return setting.Contains(nets, a)
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
	ctx, cancel := deadline.Timeout(ev.ctx, time.Duration(float64(ev.e.cfg.Limits.Deadline)*listTimeShare))
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
