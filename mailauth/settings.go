package mailauth

import (
	"net/url"
	"strings"
	"time"

	"github.com/wehr/wehr/setting"
)

// DefaultLimits is the limits: section's defaults.
func DefaultLimits() Limits {
	return Limits{DNSQueries: 150, HeaderBytes: 1 << 20, Deadline: 20 * time.Second}
}

// Check reports the problems of the limits: section.
func (l Limits) Check(p *setting.Problems) {
	if l.DNSQueries < 20 {
		p.Add("dns_queries", "must be at least 20 (one SPF check alone may take 20), got %d", l.DNSQueries)
	}
	if l.HeaderBytes < 16384 {
		p.Add("header_bytes", "must be at least 16384, got %d", l.HeaderBytes)
	}
	p.Positive("deadline", l.Deadline)
}

// DefaultDMARC is the dmarc: section's defaults.
func DefaultDMARC() DMARCConfig {
	return DMARCConfig{
		Discovery:         DiscoveryTreeWalk,
		PctZeroIsTesting:  true,
		Refusal:           RefuseEvidence,
		OnTempError:       "accept",
		OnNoAuthor:        "accept",
		MaxAuthorDomains:  5,
		TooManyAuthors:    "reject",
		PassHistory:       true,
		PassHistoryKeep:   180 * 24 * time.Hour,
		TrustedForwarders: Override{Disposition: PolicyNone},
		LocalPolicy:       Override{Disposition: PolicyNone},
		MailingLists:      MailingLists{Enabled: true},
	}
}

// Check reports the problems of the dmarc: section.
func (c DMARCConfig) Check(p *setting.Problems) {
	p.OneOf("discovery", c.Discovery, DiscoveryTreeWalk, DiscoveryPSL)
	p.OneOf("refusal", c.Refusal, RefuseEvidence, RefuseHonor, RefuseQuarantine)
	p.OneOf("on_temperror", c.OnTempError, "accept", "tempfail")
	p.OneOf("on_no_author", c.OnNoAuthor, "accept", "reject")
	p.OneOf("too_many_authors", c.TooManyAuthors, "reject", "quarantine")
	if u := c.ReferenceURL; u != "" {
		if pu, err := url.Parse(u); err != nil || pu.Scheme == "" || strings.ContainsAny(u, " \r\n") {
			p.Add("reference_url", "%q is not a URL", u)
		}
	}
	p.Positive("pass_history_keep", c.PassHistoryKeep)
	if c.MaxAuthorDomains < 1 || c.MaxAuthorDomains > 20 {
		p.Add("max_author_domains", "must be 1 to 20, got %d", c.MaxAuthorDomains)
	}
	for _, ov := range []struct {
		key string
		o   Override
	}{{"trusted_forwarders", c.TrustedForwarders}, {"local_policy", c.LocalPolicy}} {
		op := p.Section(ov.key)
		op.OneOf("disposition", ov.o.Disposition, PolicyNone, PolicyQuarantine)
		op.Domains("dkim_domains", ov.o.DKIMDomains)
		op.Domains("from_domains", ov.o.FromDomains)
		op.Domains("arc_sealers", ov.o.ARCSealers)
	}
	if len(c.LocalPolicy.ARCSealers) > 0 {
		p.Add("local_policy.arc_sealers", "not supported: use dmarc.trusted_forwarders.arc_sealers")
	}
	if len(c.LocalPolicy.DKIMDomains) > 0 {
		p.Add("local_policy.dkim_domains", "not supported: use dmarc.trusted_forwarders.dkim_domains")
	}
	if len(c.TrustedForwarders.FromDomains) > 0 {
		p.Add("trusted_forwarders.from_domains", "not supported: use dmarc.local_policy.from_domains")
	}
	p.Domains("mailing_lists.domains", c.MailingLists.Domains)
}
