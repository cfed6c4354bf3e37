// Package dmarcreport runs DMARC aggregate reporting (RFC 9990) in both
// directions: the rows we record for the mail we receive, the reports
// we build from them and send to each domain's rua, and the reports
// others send about our customers' domains, ingested and summarised.
//
// This file is the row: what one received message contributes to the
// report of its policy domain.
package dmarcreport

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"strings"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/spf"
)

// Published is the policy a report says was published (RFC 9990
// policy_published), as it was found when the message came.
type Published struct {
	Domain    string `json:"domain"` // where the record was found
	P         string `json:"p"`
	SP        string `json:"sp,omitempty"`
	NP        string `json:"np,omitempty"`
	ADKIM     string `json:"adkim"`
	ASPF      string `json:"aspf"`
	Discovery string `json:"discovery_method"` // psl or treewalk
	Testing   string `json:"testing"`          // y or n
}

// Reason is a policy override reason (RFC 9990 PolicyOverrideReason).
type Reason struct {
	Type    string `json:"type"`
	Comment string `json:"comment,omitempty"`
}

// DKIMAuth is one DKIM result (RFC 9990 DKIMAuthResultType).
type DKIMAuth struct {
	Domain   string `json:"domain" xml:"domain"`
	Selector string `json:"selector" xml:"selector"`
	Result   string `json:"result" xml:"result"`
}

// SPFAuth is the SPF result (RFC 9990 SPFAuthResultType; scope mfrom).
type SPFAuth struct {
	Domain string `json:"domain"`
	Scope  string `json:"scope"`
	Result string `json:"result"`
}

// Row is what one message contributes to an aggregate report: identical
// rows are counted, not repeated (RFC 9990 RowType, IdentifierType,
// AuthResultType).
type Row struct {
	Policy       Published `json:"policy_published"`
	SourceIP     string    `json:"source_ip"`
	HeaderFrom   string    `json:"header_from"`
	EnvelopeFrom string    `json:"envelope_from,omitempty"`
	EnvelopeTo   string    `json:"envelope_to,omitempty"`
	// Disposition is what was applied: none, pass (no action, passing
	// an enforcing policy), quarantine or reject.
	Disposition string     `json:"disposition"`
	DKIM        string     `json:"dkim"` // pass or fail: aligned DKIM
	SPF         string     `json:"spf"`  // pass or fail: aligned SPF
	Reasons     []Reason   `json:"reasons,omitempty"`
	DKIMResults []DKIMAuth `json:"dkim_results,omitempty"`
	SPFResult   SPFAuth    `json:"spf_result"`
	// RUA are the policy's reporting addresses: where the report goes
	// (a policy that changes them starts new rows).
	RUA []string `json:"rua"`
}

// Rows returns the rows a verdict contributes: one per Author Domain
// whose DMARC policy asks for aggregate reports (rua) and whose result is
// a pass or a fail. A temperror or permerror says nothing reliable about
// the domain's policy and gives no row.
func Rows(v *mailauth.Verdict, env mailauth.Envelope) []Row {
	var out []Row
	for _, d := range v.AllDMARC {
		rec := d.Record
		if rec == nil || len(rec.RUA) == 0 || (d.Result != mailauth.DMARCPass && d.Result != mailauth.DMARCFail) {
			continue
		}
		r := Row{
			Policy: Published{Domain: d.PolicyDomain, P: orNone(rec.Policy), SP: rec.Subdomain, NP: rec.NonExistent,
				ADKIM: string(rec.ADKIM), ASPF: string(rec.ASPF), Discovery: d.Discovery, Testing: yn(d.Testing)},
			SourceIP:   sourceIP(env.ClientIP),
			HeaderFrom: d.FromDomain,
			DKIM:       passFail(d.DKIMAligned),
			SPF:        passFail(d.SPFAligned),
			RUA:        rec.RUA,
		}
		if _, dom := spf.MailFromIdentity(env.MailFrom, env.Helo); env.MailFrom != "" {
			r.EnvelopeFrom = strings.ToLower(dom)
		}
		if len(env.RcptTo) > 0 {
			r.EnvelopeTo = domainOf(env.RcptTo[0])
		}
		switch {
		case d.Result == mailauth.DMARCPass && d.Policy != mailauth.PolicyNone && d.Policy != "":
			r.Disposition = "pass"
		case d.Result == mailauth.DMARCPass:
			r.Disposition = "none"
		default:
			r.Disposition = orNone(d.Disposition)
		}
		for _, o := range d.Overrides {
			r.Reasons = append(r.Reasons, Reason{Type: o})
		}
		if len(r.Reasons) > 0 && d.Reason != "" {
			r.Reasons[0].Comment = clip(d.Reason, 200)
		}
		for _, k := range v.DKIM {
			if k.Domain == "" {
				continue
			}
			r.DKIMResults = append(r.DKIMResults, DKIMAuth{Domain: k.Domain, Selector: k.Selector, Result: string(k.Result)})
		}
		r.SPFResult = SPFAuth{Domain: strings.ToLower(v.SPF.Domain), Scope: spf.ScopeMailFrom, Result: string(v.SPF.Result)}
		out = append(out, r)
	}
	return out
}

// Key identifies a row's content: rows with the same key are counted
// together.
func (r Row) Key() string {
	b, _ := json.Marshal(r)
	return keyOf(b)
}

func keyOf(def []byte) string {
	h := sha256.Sum256(def)
	return hex.EncodeToString(h[:16])
}

func orNone(s string) string {
	if s == "" {
		return mailauth.PolicyNone
	}
	return s
}

func yn(b bool) string {
	if b {
		return "y"
	}
	return "n"
}

func passFail(b bool) string {
	if b {
		return "pass"
	}
	return "fail"
}

func sourceIP(ip net.IP) string {
	if ip == nil {
		return ""
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.String()
}

func domainOf(addr string) string {
	addr = strings.Trim(addr, "<> ")
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
