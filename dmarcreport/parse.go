package dmarcreport

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Report is a received aggregate report: RFC 9990, RFC 7489 or what
// reporters send in between, read into one form. The JSON names are the
// command-line contract of wehr dmarc report parse --json.
type Report struct {
	// Format is rfc9990 (its namespace), draft (version 2.0 without
	// it) or rfc7489.
	Format           string         `json:"format"`
	Version          string         `json:"version,omitempty"`
	OrgName          string         `json:"org_name"`
	Email            string         `json:"email"`
	ExtraContactInfo string         `json:"extra_contact_info,omitempty"`
	ReportID         string         `json:"report_id"`
	DateRange        DateRange      `json:"date_range"`
	Errors           []string       `json:"errors,omitempty"`
	Policy           ReceivedPolicy `json:"policy_published"`
	// Records are the records, when the report was read whole (parse);
	// ingest streams them to the store instead.
	Records []ReceivedRecord `json:"records"`
	// RecordCount and MessageCount count every record and the messages
	// their counts add up to.
	RecordCount  int   `json:"record_count"`
	MessageCount int64 `json:"message_count"`
	// FailCount counts the messages that failed DMARC.
	FailCount int64 `json:"fail_count"`
	// Repairs says what was wrong with the file and read anyway.
	Repairs []string `json:"repairs,omitempty"`
}

// ReceivedPolicy is policy_published: pct and fo come from RFC 7489
// reports, np, testing and discovery_method from RFC 9990 ones.
type ReceivedPolicy struct {
	Domain    string `json:"domain"`
	P         string `json:"p"`
	SP        string `json:"sp,omitempty"`
	NP        string `json:"np,omitempty"`
	ADKIM     string `json:"adkim,omitempty"`
	ASPF      string `json:"aspf,omitempty"`
	Pct       *int   `json:"pct,omitempty"`
	FO        string `json:"fo,omitempty"`
	Testing   string `json:"testing,omitempty"`
	Discovery string `json:"discovery_method,omitempty"`
}

// ReceivedRecord is one record of a received report.
type ReceivedRecord struct {
	Row         ReceivedRow         `json:"row"`
	Identifiers ReceivedIdentifiers `json:"identifiers"`
	AuthResults ReceivedAuth        `json:"auth_results"`
}

// ReceivedRow is a record's row.
type ReceivedRow struct {
	SourceIP        string            `json:"source_ip"`
	Count           int64             `json:"count"`
	PolicyEvaluated ReceivedEvaluated `json:"policy_evaluated"`
}

// ReceivedEvaluated is policy_evaluated.
type ReceivedEvaluated struct {
	Disposition string   `json:"disposition"`
	DKIM        string   `json:"dkim"`
	SPF         string   `json:"spf"`
	Reasons     []Reason `json:"reasons,omitempty"`
}

// ReceivedIdentifiers are a record's identifiers.
type ReceivedIdentifiers struct {
	EnvelopeTo   string `json:"envelope_to,omitempty"`
	EnvelopeFrom string `json:"envelope_from,omitempty"`
	HeaderFrom   string `json:"header_from"`
}

// ReceivedAuth is auth_results.
type ReceivedAuth struct {
	DKIM []ReceivedDKIM `json:"dkim"`
	SPF  []ReceivedSPF  `json:"spf"`
}

// ReceivedDKIM is one DKIM result.
type ReceivedDKIM struct {
	Domain      string `json:"domain"`
	Selector    string `json:"selector,omitempty"`
	Result      string `json:"result"`
	HumanResult string `json:"human_result,omitempty"`
}

// ReceivedSPF is one SPF result.
type ReceivedSPF struct {
	Domain      string `json:"domain"`
	Scope       string `json:"scope,omitempty"`
	Result      string `json:"result"`
	HumanResult string `json:"human_result,omitempty"`
}

// DMARCPass says whether the record's messages passed DMARC: an aligned
// DKIM or SPF pass as the reporter evaluated it.
func (r ReceivedRecord) DMARCPass() bool {
	return r.Row.PolicyEvaluated.DKIM == "pass" || r.Row.PolicyEvaluated.SPF == "pass"
}

// Limits bound what reading a report may cost; the zero value takes
// the defaults.
type Limits struct {
	MaxAttachment int64 // compressed bytes of the attachment (64 MiB)
	MaxXML        int64 // decompressed XML bytes (1 GiB)
	// MaxRatio is the largest decompressed/compressed ratio taken past
	// the first MiB: DMARC XML compresses 10-50 times, a bomb a
	// thousand (200).
	MaxRatio    int64
	MaxDepth    int // XML element depth (32)
	MaxRecords  int // records per report (10,000,000)
	MaxMembers  int // files in a zip (16)
	MaxParts    int // MIME parts of a message (200)
	MaxFieldLen int // characters of one text field (4096)
}

func (l Limits) withDefaults() Limits {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	defi := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxAttachment, 64<<20)
	def(&l.MaxXML, 1<<30)
	def(&l.MaxRatio, 200)
	defi(&l.MaxDepth, 32)
	defi(&l.MaxRecords, 10_000_000)
	defi(&l.MaxMembers, 16)
	defi(&l.MaxParts, 200)
	defi(&l.MaxFieldLen, 4096)
	return l
}

// ErrNotReport says the input is not an aggregate report.
var ErrNotReport = errors.New("dmarcreport: not a readable DMARC aggregate report")

// Decode reads one report's XML from r, handing each record to fn as
// it is read (so memory does not grow with the report), and returns
// the report without its records. What the format allows and the wild
// sends is taken: no namespace or any, upper-case result words
// (lower-cased), unknown elements (ignored), invalid UTF-8 (replaced),
// a declared non-UTF-8 charset, a truncated end after complete records.
// External entities are never fetched: encoding/xml does not.
func Decode(r io.Reader, lim Limits, fn func(ReceivedRecord) error) (*Report, error) {
	lim = lim.withDefaults()
	vr := &validUTF8{r: r}
	d := xml.NewDecoder(vr)
	d.Strict = false
	d.AutoClose = nil
	d.Entity = xml.HTMLEntity
	d.CharsetReader = func(label string, in io.Reader) (io.Reader, error) { return in, nil }
	rep := &Report{Records: []ReceivedRecord{}}
	var path []string
	var text strings.Builder
	var rec *ReceivedRecord
	var reason *Reason
	var dk *ReceivedDKIM
	var sp *ReceivedSPF
	seenRoot, seenMeta := false, false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			if rep.RecordCount > 0 && (seenMeta || rep.Policy.Domain != "") {
				rep.Repairs = append(rep.Repairs, fmt.Sprintf("the XML breaks off after %d records: %v", rep.RecordCount, err))
				break
			}
			return nil, fmt.Errorf("%w: XML: %w", ErrNotReport, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			name := strings.ToLower(t.Name.Local)
			if len(path) == 0 {
				if seenRoot {
					return nil, fmt.Errorf("%w: a second root element <%s>", ErrNotReport, t.Name.Local)
				}
				seenRoot = true
				if name != "feedback" {
					return nil, fmt.Errorf("%w: the root element is <%s>, not <feedback>", ErrNotReport, t.Name.Local)
				}
				switch {
				case t.Name.Space == Namespace:
					rep.Format = "rfc9990"
				default:
					rep.Format = "rfc7489"
				}
			}
			path = append(path, name)
			if len(path) > lim.MaxDepth {
				return nil, fmt.Errorf("%w: XML nested deeper than %d elements", ErrNotReport, lim.MaxDepth)
			}
			text.Reset()
			switch strings.Join(path, "/") {
			case "feedback/record":
				rec = &ReceivedRecord{AuthResults: ReceivedAuth{DKIM: []ReceivedDKIM{}, SPF: []ReceivedSPF{}}}
			case "feedback/record/row/policy_evaluated/reason":
				reason = &Reason{}
			case "feedback/record/auth_results/dkim":
				dk = &ReceivedDKIM{}
			case "feedback/record/auth_results/spf":
				sp = &ReceivedSPF{}
			case "feedback/report_metadata":
				seenMeta = true
			}
		case xml.CharData:
			if text.Len()+len(t) > lim.MaxFieldLen {
				return nil, fmt.Errorf("%w: a text of over %d bytes in <%s>", ErrNotReport, lim.MaxFieldLen, strings.Join(path, "/"))
			}
			text.Write(t)
		case xml.EndElement:
			if len(path) == 0 {
				continue
			}
			p := strings.Join(path, "/")
			v := strings.TrimSpace(text.String())
			text.Reset()
			switch p {
			case "feedback/version":
				rep.Version = v
			case "feedback/report_metadata/org_name":
				rep.OrgName = v
			case "feedback/report_metadata/email":
				rep.Email = v
			case "feedback/report_metadata/extra_contact_info":
				rep.ExtraContactInfo = v
			case "feedback/report_metadata/report_id":
				rep.ReportID = v
			case "feedback/report_metadata/error":
				rep.Errors = append(rep.Errors, v)
			case "feedback/report_metadata/date_range/begin":
				rep.DateRange.Begin = number(v, &rep.Repairs, "date_range begin")
			case "feedback/report_metadata/date_range/end":
				rep.DateRange.End = number(v, &rep.Repairs, "date_range end")
			case "feedback/policy_published/domain":
				rep.Policy.Domain = strings.ToLower(strings.TrimSuffix(v, "."))
			case "feedback/policy_published/p":
				rep.Policy.P = word(v)
			case "feedback/policy_published/sp":
				rep.Policy.SP = word(v)
			case "feedback/policy_published/np":
				rep.Policy.NP = word(v)
			case "feedback/policy_published/adkim":
				rep.Policy.ADKIM = word(v)
			case "feedback/policy_published/aspf":
				rep.Policy.ASPF = word(v)
			case "feedback/policy_published/pct":
				if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 100 {
					rep.Policy.Pct = &n
				} else if v != "" {
					rep.Repairs = append(rep.Repairs, fmt.Sprintf("pct %q ignored", v))
				}
			case "feedback/policy_published/fo":
				rep.Policy.FO = v
			case "feedback/policy_published/testing":
				rep.Policy.Testing = word(v)
			case "feedback/policy_published/discovery_method":
				rep.Policy.Discovery = word(v)
			case "feedback/record/row/source_ip":
				rec.Row.SourceIP = v
			case "feedback/record/row/count":
				rec.Row.Count = number(v, &rep.Repairs, "count")
			case "feedback/record/row/policy_evaluated/disposition":
				rec.Row.PolicyEvaluated.Disposition = word(v)
			case "feedback/record/row/policy_evaluated/dkim":
				rec.Row.PolicyEvaluated.DKIM = word(v)
			case "feedback/record/row/policy_evaluated/spf":
				rec.Row.PolicyEvaluated.SPF = word(v)
			case "feedback/record/row/policy_evaluated/reason/type":
				reason.Type = word(v)
			case "feedback/record/row/policy_evaluated/reason/comment":
				reason.Comment = v
			case "feedback/record/row/policy_evaluated/reason":
				if len(rec.Row.PolicyEvaluated.Reasons) < 16 {
					rec.Row.PolicyEvaluated.Reasons = append(rec.Row.PolicyEvaluated.Reasons, *reason)
				}
			case "feedback/record/identifiers/envelope_to":
				rec.Identifiers.EnvelopeTo = strings.ToLower(v)
			case "feedback/record/identifiers/envelope_from":
				rec.Identifiers.EnvelopeFrom = strings.ToLower(v)
			case "feedback/record/identifiers/header_from":
				rec.Identifiers.HeaderFrom = strings.ToLower(v)
			case "feedback/record/auth_results/dkim/domain":
				dk.Domain = strings.ToLower(v)
			case "feedback/record/auth_results/dkim/selector":
				dk.Selector = v
			case "feedback/record/auth_results/dkim/result":
				dk.Result = word(v)
			case "feedback/record/auth_results/dkim/human_result":
				dk.HumanResult = v
			case "feedback/record/auth_results/dkim":
				if len(rec.AuthResults.DKIM) < 32 {
					rec.AuthResults.DKIM = append(rec.AuthResults.DKIM, *dk)
				}
			case "feedback/record/auth_results/spf/domain":
				sp.Domain = strings.ToLower(v)
			case "feedback/record/auth_results/spf/scope":
				sp.Scope = word(v)
			case "feedback/record/auth_results/spf/result":
				sp.Result = word(v)
			case "feedback/record/auth_results/spf/human_result":
				sp.HumanResult = v
			case "feedback/record/auth_results/spf":
				if len(rec.AuthResults.SPF) < 32 {
					rec.AuthResults.SPF = append(rec.AuthResults.SPF, *sp)
				}
			case "feedback/record":
				if rep.RecordCount >= lim.MaxRecords {
					return nil, fmt.Errorf("%w: over %d records", ErrNotReport, lim.MaxRecords)
				}
				rep.RecordCount++
				rep.MessageCount = addSat(rep.MessageCount, rec.Row.Count)
				if !rec.DMARCPass() {
					rep.FailCount = addSat(rep.FailCount, rec.Row.Count)
				}
				if err := fn(*rec); err != nil {
					return nil, err
				}
				rec = nil
			}
			path = path[:len(path)-1]
		}
	}
	if !seenRoot {
		return nil, fmt.Errorf("%w: no XML element in it", ErrNotReport)
	}
	if rep.Format == "rfc7489" && rep.Version == "2.0" {
		rep.Format = "draft"
	}
	if vr.replaced {
		rep.Repairs = append(rep.Repairs, "invalid UTF-8 replaced")
	}
	var missing []string
	if rep.Policy.Domain == "" {
		missing = append(missing, "policy_published/domain")
	}
	if rep.ReportID == "" {
		missing = append(missing, "report_metadata/report_id")
	}
	if rep.OrgName == "" {
		missing = append(missing, "report_metadata/org_name")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: no %s", ErrNotReport, strings.Join(missing, ", "))
	}
	return rep, nil
}

// Parse reads a whole report's XML, its records included.
func Parse(r io.Reader, lim Limits) (*Report, error) {
	var recs []ReceivedRecord
	rep, err := Decode(r, lim, func(rec ReceivedRecord) error { recs = append(recs, rec); return nil })
	if err != nil {
		return nil, err
	}
	if recs != nil {
		rep.Records = recs
	}
	return rep, nil
}

// word normalises a keyword: lower case, "none" kept.
func word(v string) string { return strings.ToLower(v) }

func number(v string, repairs *[]string, what string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		*repairs = append(*repairs, fmt.Sprintf("%s %q read as 0", what, v))
		return 0
	}
	return n
}

func addSat(a, b int64) int64 {
	if a > (1<<63-1)-b {
		return 1<<63 - 1
	}
	return a + b
}

// validUTF8 replaces invalid UTF-8 with U+FFFD as it reads, a
// sequence split across reads included.
type validUTF8 struct {
	r        io.Reader
	chunk    []byte // one read's buffer, reused
	buf      []byte // read, not yet handed out
	out      []byte
	replaced bool
	eof      bool
}

func (v *validUTF8) Read(p []byte) (int, error) {
	for len(v.out) == 0 {
		if v.eof {
			if len(v.buf) > 0 {
				v.out = v.fix(v.buf)
				v.buf = nil
				continue
			}
			return 0, io.EOF
		}
		if v.chunk == nil {
			v.chunk = make([]byte, 32<<10)
		}
		n, err := v.r.Read(v.chunk)
		v.buf = append(v.buf, v.chunk[:n]...)
		if err == io.EOF {
			v.eof = true
		} else if err != nil {
			return 0, err
		}
		// Keep an incomplete sequence at the end for the next read.
		keep := 0
		for i := len(v.buf) - 1; i >= 0 && i >= len(v.buf)-3; i-- {
			if utf8.RuneStart(v.buf[i]) {
				if !utf8.FullRune(v.buf[i:]) {
					keep = len(v.buf) - i
				}
				break
			}
		}
		if v.eof {
			keep = 0
		}
		v.out = v.fix(v.buf[:len(v.buf)-keep])
		v.buf = append([]byte(nil), v.buf[len(v.buf)-keep:]...)
	}
	n := copy(p, v.out)
	v.out = v.out[n:]
	return n, nil
}

func (v *validUTF8) fix(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	v.replaced = true
	return []byte(strings.ToValidUTF8(string(b), "\uFFFD"))
}
