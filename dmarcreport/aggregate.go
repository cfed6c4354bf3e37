package dmarcreport

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/wehr/wehr/store"
)

// Namespace is the RFC 9990 aggregate report namespace.
const Namespace = "urn:ietf:params:xml:ns:dmarc-2.0"

// Meta says who reports (RFC 9990 report_metadata).
type Meta struct {
	OrgName string // the reporting organisation
	Email   string // its contact address
	// Submitter is the domain name of the Mail Receiver: in the file
	// name, the subject and the report id.
	Submitter        string
	ExtraContactInfo string
	Generator        string
}

// Feedback is an aggregate report (RFC 9990 section 3, the feedback
// element of its schema).
type Feedback struct {
	XMLName  xml.Name        `xml:"urn:ietf:params:xml:ns:dmarc-2.0 feedback"`
	Version  string          `xml:"version"`
	Metadata ReportMetadata  `xml:"report_metadata"`
	Policy   PolicyPublished `xml:"policy_published"`
	Records  []Record        `xml:"record"`
	// RUA are the destinations the policy asked for (the latest row's).
	RUA []string `xml:"-"`
}

// ReportMetadata is report_metadata.
type ReportMetadata struct {
	OrgName          string    `xml:"org_name"`
	Email            string    `xml:"email"`
	ExtraContactInfo string    `xml:"extra_contact_info,omitempty"`
	ReportID         string    `xml:"report_id"`
	DateRange        DateRange `xml:"date_range"`
	Generator        string    `xml:"generator,omitempty"`
}

// DateRange is the period, in seconds since the epoch, both ends
// included.
type DateRange struct {
	Begin int64 `xml:"begin" json:"begin"`
	End   int64 `xml:"end" json:"end"`
}

// PolicyPublished is policy_published.
type PolicyPublished struct {
	Domain    string `xml:"domain"`
	P         string `xml:"p"`
	SP        string `xml:"sp,omitempty"`
	NP        string `xml:"np,omitempty"`
	ADKIM     string `xml:"adkim,omitempty"`
	ASPF      string `xml:"aspf,omitempty"`
	Discovery string `xml:"discovery_method,omitempty"`
	Testing   string `xml:"testing,omitempty"`
}

// Record is one record: a row, its identifiers and its results.
type Record struct {
	Row         XMLRow      `xml:"row"`
	Identifiers Identifiers `xml:"identifiers"`
	AuthResults AuthResults `xml:"auth_results"`
}

// XMLRow is a record's row.
type XMLRow struct {
	SourceIP        string          `xml:"source_ip"`
	Count           int64           `xml:"count"`
	PolicyEvaluated PolicyEvaluated `xml:"policy_evaluated"`
}

// PolicyEvaluated is policy_evaluated; its children are a sequence.
type PolicyEvaluated struct {
	Disposition string      `xml:"disposition"`
	DKIM        string      `xml:"dkim"`
	SPF         string      `xml:"spf"`
	Reasons     []XMLReason `xml:"reason"`
}

// XMLReason is a policy override reason.
type XMLReason struct {
	Type    string `xml:"type"`
	Comment string `xml:"comment,omitempty"`
}

// Identifiers is identifiers.
type Identifiers struct {
	EnvelopeTo   string `xml:"envelope_to,omitempty"`
	EnvelopeFrom string `xml:"envelope_from,omitempty"`
	HeaderFrom   string `xml:"header_from"`
}

// AuthResults is auth_results: the DKIM results, then SPF.
type AuthResults struct {
	DKIM []DKIMAuth `xml:"dkim"`
	SPF  *XMLSPF    `xml:"spf,omitempty"`
}

// XMLSPF is an SPF result.
type XMLSPF struct {
	Domain string `xml:"domain"`
	Scope  string `xml:"scope,omitempty"`
	Result string `xml:"result"`
}

// ReportID is the report id of domain's report for the period that
// begins at begin: the same whenever the report is built again, so that
// a report resent after a crash can be recognised (RFC 9990 Report-ID).
func ReportID(domain string, begin time.Time, submitter string) string {
	return strconv.FormatInt(begin.Unix(), 10) + "." + domain + "@" + submitter
}

// Filename is the attachment's name (RFC 9990: receiver!policy-domain!
// begin!end.xml.gz).
func Filename(submitter, domain string, begin, end time.Time) string {
	return fmt.Sprintf("%s!%s!%d!%d.xml.gz", submitter, domain, begin.Unix(), end.Add(-time.Second).Unix())
}

// Build makes domain's report for the period [begin, end) from its
// stored rows (counts of the same row in several hours add up). It
// returns nil when there is nothing to report.
func Build(meta Meta, domain string, begin, end time.Time, rows []store.StoredRow) (*Feedback, error) {
	type agg struct {
		row   Row
		count int64
		last  time.Time
	}
	byKey := map[string]*agg{}
	var latest *agg
	for _, sr := range rows {
		if sr.Hour.Before(begin) || !sr.Hour.Before(end) {
			continue
		}
		a, ok := byKey[sr.Key]
		if !ok {
			a = &agg{}
			if err := json.Unmarshal(sr.Def, &a.row); err != nil {
				return nil, fmt.Errorf("dmarcreport: stored row %s: %w", sr.Key, err)
			}
			byKey[sr.Key] = a
		}
		a.count += sr.Count
		if sr.Hour.After(a.last) || a.last.IsZero() {
			a.last = sr.Hour
		}
		if latest == nil || a.last.After(latest.last) {
			latest = a
		}
	}
	if latest == nil {
		return nil, nil
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	// Most messages first, then a stable order.
	sort.Slice(keys, func(i, j int) bool {
		a, b := byKey[keys[i]], byKey[keys[j]]
		if a.count != b.count {
			return a.count > b.count
		}
		return keys[i] < keys[j]
	})
	p := latest.row.Policy
	f := &Feedback{Version: "1.0",
		Metadata: ReportMetadata{OrgName: meta.OrgName, Email: meta.Email, ExtraContactInfo: meta.ExtraContactInfo,
			ReportID: ReportID(domain, begin, meta.Submitter), DateRange: DateRange{Begin: begin.Unix(), End: end.Add(-time.Second).Unix()},
			Generator: meta.Generator},
		Policy: PolicyPublished(p),
		RUA:    latest.row.RUA,
	}
	for _, k := range keys {
		a := byKey[k]
		r := a.row
		rec := Record{
			Row: XMLRow{SourceIP: r.SourceIP, Count: a.count,
				PolicyEvaluated: PolicyEvaluated{Disposition: r.Disposition, DKIM: r.DKIM, SPF: r.SPF}},
			Identifiers: Identifiers{EnvelopeTo: r.EnvelopeTo, EnvelopeFrom: r.EnvelopeFrom, HeaderFrom: r.HeaderFrom},
			AuthResults: AuthResults{DKIM: r.DKIMResults},
		}
		for _, x := range r.Reasons {
			rec.Row.PolicyEvaluated.Reasons = append(rec.Row.PolicyEvaluated.Reasons, XMLReason(x))
		}
		if r.SPFResult.Domain != "" {
			rec.AuthResults.SPF = &XMLSPF{Domain: r.SPFResult.Domain, Scope: r.SPFResult.Scope, Result: r.SPFResult.Result}
		}
		f.Records = append(f.Records, rec)
	}
	return f, nil
}

// XML is the report as an XML document.
func (f *Feedback) XML() ([]byte, error) {
	b, err := xml.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dmarcreport: %w", err)
	}
	return append([]byte(xml.Header), append(b, '\n')...), nil
}

// Gzip is the report as the gzip file that is sent.
func (f *Feedback) Gzip() ([]byte, error) {
	x, err := f.XML()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(x); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
