package dmarcreport

import (
	"fmt"
	"net/mail"
	"strings"

	"golang.org/x/net/idna"
)

// PolicyRequest is what a domain owner wants published.
type PolicyRequest struct {
	Domain      string
	Policy      string   // p: none, quarantine, reject
	Subdomain   string   // sp, "" for the same as p
	NonExistent string   // np, "" for the same as sp
	RUA         []string // report addresses (user@domain)
	ADKIM, ASPF string   // "s", "r" or "" (relaxed)
	Testing     bool     // t=y
}

// ZoneRecord is a TXT record to publish.
type ZoneRecord struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	Why   string `json:"why"`
}

// Zone is the record as a zone file line.
func (z ZoneRecord) Zone() string {
	return fmt.Sprintf("%s. 3600 IN TXT %q", z.Name, z.Value)
}

// Records returns the RFC 9989 DMARC record for r, and for each report
// address outside the domain's organisation the record that authorises
// it to take the domain's reports (RFC 9990 "Verifying External
// Destinations"), to publish in the address's domain.
func (r PolicyRequest) Records() ([]ZoneRecord, error) {
	d, err := idna.Lookup.ToASCII(strings.ToLower(strings.TrimSuffix(strings.TrimSpace(r.Domain), ".")))
	if err != nil || !strings.Contains(d, ".") {
		return nil, fmt.Errorf("%q is not a domain name", r.Domain)
	}
	policy := func(flag, v string) error {
		switch v {
		case "none", "quarantine", "reject":
			return nil
		}
		return fmt.Errorf("--%s %q: write none, quarantine or reject", flag, v)
	}
	if err := policy("policy", r.Policy); err != nil {
		return nil, err
	}
	tags := []string{"v=DMARC1", "p=" + r.Policy}
	if r.Subdomain != "" {
		if err := policy("subdomain-policy", r.Subdomain); err != nil {
			return nil, err
		}
		tags = append(tags, "sp="+r.Subdomain)
	}
	if r.NonExistent != "" {
		if err := policy("np", r.NonExistent); err != nil {
			return nil, err
		}
		tags = append(tags, "np="+r.NonExistent)
	}
	for flag, v := range map[string]string{"adkim": r.ADKIM, "aspf": r.ASPF} {
		if v != "" && v != "r" && v != "s" {
			return nil, fmt.Errorf("--%s %q: write r (relaxed) or s (strict)", flag, v)
		}
	}
	if r.ADKIM == "s" {
		tags = append(tags, "adkim=s")
	}
	if r.ASPF == "s" {
		tags = append(tags, "aspf=s")
	}
	if r.Testing {
		tags = append(tags, "t=y")
	}
	var uris []string
	var extra []ZoneRecord
	for _, a := range r.RUA {
		addr, err := mail.ParseAddress(strings.TrimPrefix(a, "mailto:"))
		if err != nil || addr.Name != "" || strings.ContainsAny(addr.Address, ",;!") {
			return nil, fmt.Errorf("--rua %q is not one address", a)
		}
		// RFC 9989 4.7: the URI's commas and semicolons would break the
		// record; an address has none left here.
		uris = append(uris, "mailto:"+addr.Address)
		host, err := idna.Lookup.ToASCII(hostOf(addr.Address))
		if err != nil {
			return nil, fmt.Errorf("--rua %q: the domain is not a domain name", a)
		}
		if orgDomain(host) != orgDomain(d) {
			extra = append(extra, ZoneRecord{Name: d + "._report._dmarc." + host, Value: "v=DMARC1;",
				Why: "lets " + host + " take the reports of " + d + " (publish it in " + host + "'s zone)"})
		}
	}
	if len(uris) > 0 {
		tags = append(tags, "rua="+strings.Join(uris, ","))
	}
	out := []ZoneRecord{{Name: "_dmarc." + d, Value: strings.Join(tags, "; "), Why: "the DMARC policy of " + d}}
	return append(out, extra...), nil
}
