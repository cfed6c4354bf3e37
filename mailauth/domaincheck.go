package mailauth

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/wehr/wehr/spf"
)

// DomainReport is what a domain publishes for mail authentication, with
// warnings a postmaster can act on (`wehr check domain`).
type DomainReport struct {
	Domain   string            `json:"domain"`
	SPF      SPFReport         `json:"spf"`
	DKIM     []DKIMKeyReport   `json:"dkim"`
	DMARC    DMARCRecordReport `json:"dmarc"`
	Warnings []string          `json:"warnings"`
}

// SPFReport describes a domain's SPF record.
type SPFReport struct {
	Record string `json:"record"`
	// Lookups counts the terms that cost a DNS lookup under RFC 7208
	// 4.6.4, through include: and redirect=.
	Lookups  int      `json:"lookups"`
	Warnings []string `json:"warnings"`
}

// DKIMKeyReport describes one selector's key record.
type DKIMKeyReport struct {
	Selector string   `json:"selector"`
	KeyType  string   `json:"key_type"`
	KeyBits  int      `json:"key_bits"`
	Warnings []string `json:"warnings"`
}

// DMARCRecordReport describes the DMARC record that applies to a domain.
type DMARCRecordReport struct {
	Record       string   `json:"record"`
	PolicyDomain string   `json:"policy_domain"`
	Discovery    string   `json:"discovery"`
	Warnings     []string `json:"warnings"`
}

// CheckDomain reports what domain publishes: SPF, the DKIM keys of the
// given selectors, and DMARC.
func (e *Engine) CheckDomain(ctx context.Context, domain string, selectors []string) DomainReport {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Limits.Deadline)
	defer cancel()
	d, err := ToASCII(domain)
	if err != nil {
		d = domain
	}
	rep := DomainReport{Domain: d, DKIM: []DKIMKeyReport{}, Warnings: []string{}}
	rep.SPF = analyzeSPF(ctx, e.res, d)
	for _, s := range selectors {
		rep.DKIM = append(rep.DKIM, checkDKIMKey(ctx, e.res, d, s))
	}
	rep.DMARC = e.checkDMARCRecord(ctx, d)
	if rep.SPF.Record == "" && rep.DMARC.Record == "" {
		rep.Warnings = append(rep.Warnings, d+" publishes neither SPF nor DMARC: anyone can send mail in its name")
	}
	if len(selectors) == 0 {
		rep.Warnings = append(rep.Warnings, "no DKIM selector to check (DNS cannot list a domain's DKIM keys): name one with wehr check domain --selector, or wait for reports showing the selectors of its own signatures")
	}
	// Ed25519 alone is a problem only if none of the selectors checked
	// holds a usable RSA key.
	ed, rsa := false, false
	for _, k := range rep.DKIM {
		ed = ed || k.KeyType == "ed25519" && k.KeyBits > 0
		rsa = rsa || k.KeyType == "rsa" && k.KeyBits >= 1024
	}
	if ed && !rsa {
		rep.Warnings = append(rep.Warnings, "ed25519 alone is not accepted by every verifier: sign with an RSA key too")
	}
	return rep
}

func analyzeSPF(ctx context.Context, res Resolver, domain string) SPFReport {
	r := SPFReport{Warnings: []string{}}
	rec, err := spfRecord(ctx, res, domain)
	if err != nil {
		r.Warnings = append(r.Warnings, err.Error())
		return r
	}
	if rec == "" {
		r.Warnings = append(r.Warnings, "no SPF record: receivers cannot tell which hosts may send for "+domain)
		return r
	}
	r.Record = rec
	if err := spf.CheckRecord(rec); err != nil {
		r.Warnings = append(r.Warnings, err.Error()+": receivers treat the record as permerror")
	}
	seen := map[string]bool{domain: true}
	r.Lookups = countSPFLookups(ctx, res, rec, seen, &r.Warnings, 0)
	if r.Lookups > 10 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d DNS lookups: more than the 10 RFC 7208 4.6.4 allows, receivers return permerror", r.Lookups))
	}
	terms := strings.Fields(strings.ToLower(rec))
	last := terms[len(terms)-1]
	switch {
	case strings.HasSuffix(last, "all") && (last == "+all" || last == "all"):
		r.Warnings = append(r.Warnings, "ends with +all: every host on the internet may send for "+domain)
	case last == "?all":
		r.Warnings = append(r.Warnings, "ends with ?all: neutral, receivers learn nothing from it")
	case !strings.HasSuffix(last, "all") && !strings.HasPrefix(last, "redirect="):
		r.Warnings = append(r.Warnings, "no all mechanism or redirect at the end: hosts not listed get neutral")
	}
	for _, t := range terms {
		if strings.TrimLeft(t, "+-~?") == "ptr" || strings.HasPrefix(strings.TrimLeft(t, "+-~?"), "ptr:") {
			r.Warnings = append(r.Warnings, "uses ptr, which RFC 7208 5.5 says not to use (slow, unreliable)")
			break
		}
	}
	return r
}

// spfRecord returns the domain's one SPF record, "" if none.
func spfRecord(ctx context.Context, res Resolver, domain string) (string, error) {
	txts, err := res.LookupTXT(ctx, domain)
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return "", nil
		}
		return "", fmt.Errorf("SPF lookup of %s: %v", domain, err)
	}
	var recs []string
	for _, t := range txts {
		if spf.IsRecord(t) {
			recs = append(recs, t)
		}
	}
	if len(recs) > 1 {
		return "", fmt.Errorf("%d SPF records at %s: receivers return permerror (RFC 7208 4.5)", len(recs), domain)
	}
	if len(recs) == 0 {
		return "", nil
	}
	return recs[0], nil
}

// countSPFLookups counts the lookup terms of rec, following include: and
// redirect= targets that need no macro expansion.
func countSPFLookups(ctx context.Context, res Resolver, rec string, seen map[string]bool, warnings *[]string, depth int) int {
	n := 0
	for _, t := range strings.Fields(rec)[1:] {
		lt := strings.ToLower(strings.TrimLeft(t, "+-~?"))
		var target string
		switch {
		case strings.HasPrefix(lt, "include:"):
			n++
			target = t[strings.IndexByte(t, ':')+1:]
		case strings.HasPrefix(lt, "redirect="):
			n++
			target = t[strings.IndexByte(t, '=')+1:]
		case lt == "a" || lt == "mx" || lt == "ptr" || strings.HasPrefix(lt, "a:") || strings.HasPrefix(lt, "a/") ||
			strings.HasPrefix(lt, "mx:") || strings.HasPrefix(lt, "mx/") || strings.HasPrefix(lt, "ptr:") || strings.HasPrefix(lt, "exists:"):
			n++
		}
		if target == "" || strings.Contains(target, "%") || depth > 10 {
			continue
		}
		target = strings.ToLower(strings.TrimSuffix(target, "."))
		if seen[target] {
			*warnings = append(*warnings, "include loop through "+target)
			continue
		}
		seen[target] = true
		sub, err := spfRecord(ctx, res, target)
		if err != nil {
			*warnings = append(*warnings, err.Error())
			continue
		}
		if sub == "" {
			*warnings = append(*warnings, target+" has no SPF record: receivers return permerror for "+t)
			continue
		}
		n += countSPFLookups(ctx, res, sub, seen, warnings, depth+1)
	}
	return n
}

func checkDKIMKey(ctx context.Context, res Resolver, domain, selector string) DKIMKeyReport {
	r := DKIMKeyReport{Selector: selector, Warnings: []string{}}
	name := selector + "._domainkey." + domain
	txts, err := res.LookupTXT(ctx, name)
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			r.Warnings = append(r.Warnings, "no key record at "+name+": signatures with s="+selector+" give permerror")
		} else {
			r.Warnings = append(r.Warnings, "key lookup "+name+": "+err.Error())
		}
		return r
	}
	if len(txts) != 1 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d TXT records at %s: want exactly one key record", len(txts), name))
		if len(txts) == 0 {
			return r
		}
	}
	rec := txts[0]
	r.KeyType = "rsa"
	tags := map[string]string{}
	for _, part := range strings.Split(rec, ";") {
		if k, v, ok := strings.Cut(part, "="); ok {
			tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
		}
	}
	if k, ok := tags["k"]; ok {
		r.KeyType = strings.ToLower(k)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		r.Warnings = append(r.Warnings, "v="+v+": verifiers ignore this record (want v=DKIM1)")
	}
	p, ok := tags["p"]
	switch {
	case !ok:
		r.Warnings = append(r.Warnings, "no p= tag: not a key record")
		return r
	case p == "":
		r.Warnings = append(r.Warnings, "empty p=: the key is revoked (RFC 6376 3.6.1)")
		return r
	}
	r.KeyBits = KeyBits(rec)
	switch {
	case r.KeyBits == 0:
		r.Warnings = append(r.Warnings, "p= does not hold a "+r.KeyType+" public key that parses")
	case r.KeyType == "rsa" && r.KeyBits < 1024:
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d-bit RSA key: verifiers reject keys under 1024 bits (RFC 8301 3.2)", r.KeyBits))
	case r.KeyType == "rsa" && r.KeyBits < 2048:
		r.Warnings = append(r.Warnings, fmt.Sprintf("%d-bit RSA key: use 2048 bits", r.KeyBits))
	}
	if strings.Contains(tags["t"], "y") {
		r.Warnings = append(r.Warnings, "t=y: the domain is testing DKIM; verifiers may treat signatures as unsigned")
	}
	return r
}

func (e *Engine) checkDMARCRecord(ctx context.Context, domain string) DMARCRecordReport {
	r := DMARCRecordReport{Discovery: e.cfg.DMARC.Discovery, Warnings: []string{}}
	d := newDMARCDNS(e.res, e.cfg.DMARC.Discovery)
	if at := d.recordAt(ctx, domain); at.multiple {
		r.Warnings = append(r.Warnings, "several DMARC records at _dmarc."+domain+": all are ignored")
	}
	pf, err := d.discover(ctx, domain)
	if err != nil {
		r.Warnings = append(r.Warnings, "DMARC lookup: "+err.Error())
		return r
	}
	if pf.rec == nil {
		r.Warnings = append(r.Warnings, pf.why+": receivers apply no DMARC policy")
		return r
	}
	rec := pf.rec
	r.Record, r.PolicyDomain = rec.Raw, pf.domain
	if pf.domain != domain {
		r.Warnings = append(r.Warnings, "no record at _dmarc."+domain+"; the record of "+pf.domain+" applies")
	}
	if rec.BadPolicy {
		r.Warnings = append(r.Warnings, "invalid p, sp or np: receivers act as if p=none")
	}
	if rec.Policy == PolicyNone {
		r.Warnings = append(r.Warnings, "p=none: monitoring only, forged mail is delivered")
	}
	if rec.Testing {
		r.Warnings = append(r.Warnings, "t=y: testing, receivers apply one level less than the policy")
	}
	if strings.Contains(strings.ToLower(rec.Raw), "pct=") {
		r.Warnings = append(r.Warnings, "pct is not a DMARC tag any more (RFC 9989); use t=y for testing")
	}
	if len(rec.RUA) == 0 {
		r.Warnings = append(r.Warnings, "no valid rua: you receive no aggregate reports")
	}
	return r
}
