package dmarcreport

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/store"
)

const wildReport = `<?xml version="1.0" encoding="%ENC%"?>
<feedback xmlns="%NS%">
  <report_metadata><org_name>%ORG%</org_name><email>r@reporter.example</email>
    <report_id>id-1</report_id><date_range><begin>1700000000</begin><end>1700086399</end></date_range></report_metadata>
  <policy_published><domain>Bank.Example.</domain><adkim>R</adkim><aspf>r</aspf><p>REJECT</p><sp>none</sp><pct>100</pct></policy_published>
  <record><row><source_ip>192.0.2.1</source_ip><count>3</count>
    <policy_evaluated><disposition>Reject</disposition><dkim>FAIL</dkim><spf>Fail</spf></policy_evaluated></row>
    <identifiers><header_from>Bank.Example</header_from></identifiers>
    <auth_results><spf><domain>evil.example</domain><result>SoftFail</result></spf></auth_results></record>
  <record><row><source_ip>192.0.2.2</source_ip><count>5</count>
    <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>bank.example</header_from></identifiers>
    <auth_results><dkim><domain>bank.example</domain><selector>s1</selector><result>PASS</result></dkim></auth_results></record>
</feedback>`

func wild(enc, ns, org string) string {
	return strings.NewReplacer("%ENC%", enc, "%NS%", ns, "%ORG%", org).Replace(wildReport)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zipped(name string, b []byte) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, _ := w.Create(name)
	f.Write(b)
	w.Close()
	return buf.Bytes()
}

func email(ct, name, cte string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: r@reporter.example\r\nSubject: Report Domain: bank.example\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\n")
	b.WriteString("Content-Type: " + ct + "\r\n")
	if name != "" {
		b.WriteString("Content-Disposition: attachment; filename=\"" + name + "\"\r\n")
	}
	if cte == "base64" {
		b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.StdEncoding.EncodeToString(body)
		for len(enc) > 60 {
			b.WriteString(enc[:60] + "\r\n")
			enc = enc[60:]
		}
		b.WriteString(enc + "\r\n")
	} else {
		b.WriteString("\r\n")
		b.Write(body)
		b.WriteString("\r\n")
	}
	b.WriteString("--XX--\r\n")
	return b.Bytes()
}

func parseAny(input []byte) (*Report, reportmail.Attachment, error) {
	x, att, err := Open(bytes.NewReader(input), Limits{})
	if err != nil {
		return nil, att, err
	}
	rep, err := Parse(x, Limits{})
	return rep, att, err
}

// What reporters send in the wild reads to the same report.
func TestParseWild(t *testing.T) {
	plain := []byte(wild("UTF-8", "", "Reporter"))
	tests := []struct {
		name, format, org, compression string
		in                             []byte
	}{
		{"bare XML, RFC 7489 without namespace", "rfc7489", "Reporter", "none", plain},
		{"RFC 7489 namespace", "rfc7489", "Reporter", "none", []byte(wild("UTF-8", "http://dmarc.org/dmarc-xml/0.1", "Reporter"))},
		{"RFC 9990 namespace", "rfc9990", "Reporter", "none", []byte(wild("UTF-8", Namespace, "Reporter"))},
		{"bare gzip", "rfc7489", "Reporter", "gzip", gz(plain)},
		{"bare zip", "rfc7489", "Reporter", "zip", zipped("r.xml", plain)},
		{"latin-1 declared, invalid UTF-8", "rfc7489", "R\uFFFDporter", "none", []byte(wild("ISO-8859-1", "", "R\xe9porter"))},
		{"email, gzip attachment", "rfc7489", "Reporter", "gzip", email("application/gzip", "a!b!1!2.xml.gz", "base64", gz(plain))},
		{"email, zip named .xml.zip as octet-stream", "rfc7489", "Reporter", "zip", email("application/octet-stream", "a!b!1!2.xml.zip", "base64", zipped("a.xml", plain))},
		{"email, gzip labelled zip", "rfc7489", "Reporter", "gzip", email("application/zip", "x.zip", "base64", gz(plain))},
		{"email, uncompressed XML, 8bit", "rfc7489", "Reporter", "none", email("text/xml", "", "", plain)},
		{"email, XML with a BOM, base64", "rfc7489", "Reporter", "none", email("application/xml", "r.xml", "base64", append([]byte("\xef\xbb\xbf"), plain...))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep, att, err := parseAny(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Format != tc.format || rep.OrgName != tc.org || att.Compression != tc.compression {
				t.Errorf("format %s org %q compression %s", rep.Format, rep.OrgName, att.Compression)
			}
			p := rep.Policy
			if p.Domain != "bank.example" || p.P != "reject" || p.ADKIM != "r" || p.Pct == nil || *p.Pct != 100 {
				t.Errorf("policy %+v", p)
			}
			if len(rep.Records) != 2 || rep.MessageCount != 8 {
				t.Fatalf("records %+v", rep.Records)
			}
			r := rep.Records[0]
			if r.Row.PolicyEvaluated.Disposition != "reject" || r.Row.PolicyEvaluated.DKIM != "fail" ||
				r.AuthResults.SPF[0].Result != "softfail" || r.Identifiers.HeaderFrom != "bank.example" || r.DMARCPass() {
				t.Errorf("record %+v", r)
			}
			if !rep.Records[1].DMARCPass() || rep.Records[1].AuthResults.DKIM[0].Result != "pass" {
				t.Errorf("record %+v", rep.Records[1])
			}
		})
	}
}

// An empty or unreadable report is an error that names the problem;
// a report cut off after whole records is read, with the repair noted.
func TestParseBroken(t *testing.T) {
	plain := wild("UTF-8", "", "Reporter")
	cut := plain[:strings.Index(plain, "</record>")+len("</record>")]
	rep, _, err := parseAny([]byte(cut))
	if err != nil || rep.RecordCount != 1 || len(rep.Repairs) == 0 {
		t.Fatalf("truncated: %+v %v", rep, err)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"empty":            {"", "the input is empty"},
		"not a report":     {"<html><body>hi</body></html>", "not <feedback>"},
		"no report id":     {strings.Replace(plain, "<report_id>id-1</report_id>", "", 1), "no report_metadata/report_id"},
		"no domain":        {strings.Replace(plain, "<domain>Bank.Example.</domain>", "", 1), "no policy_published/domain"},
		"email, no report": {string(email("image/png", "x.png", "base64", []byte("png"))), "no report attachment in the message (parts: text/plain, image/png)"},
		"broken gzip":      {string(email("application/gzip", "r.xml.gz", "base64", []byte("\x1f\x8bxxxx"))), "gzip"},
		"garbage":          {"\x00\x01\x02 not mail", "neither XML"},
	} {
		_, _, err := parseAny([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

// The hostile variants: entities are not expanded (no file is read, no
// billion laughs), nesting and field sizes are capped, and bombs are
// refused within their first megabytes.
func TestParseHostile(t *testing.T) {
	xxe := strings.Replace(wild("UTF-8", "", "&xxe;&lol;"), "<feedback", `<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd"><!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><feedback`, 1)
	rep, _, err := parseAny([]byte(xxe))
	if err == nil && (strings.Contains(rep.OrgName, "root:") || strings.Contains(rep.OrgName, "lollol")) {
		t.Fatalf("an entity was expanded: %q", rep.OrgName)
	}
	deep := strings.Replace(wild("UTF-8", "", "R"), "<org_name>", strings.Repeat("<x>", 100)+"<org_name>", 1)
	if _, _, err := parseAny([]byte(deep)); err == nil || !strings.Contains(err.Error(), "deeper") {
		t.Errorf("deep nesting: %v", err)
	}
	long := wild("UTF-8", "", strings.Repeat("A", 100000))
	if _, _, err := parseAny([]byte(long)); err == nil || !strings.Contains(err.Error(), "a text of over") {
		t.Errorf("long field: %v", err)
	}
	var members bytes.Buffer
	zw := zip.NewWriter(&members)
	for i := 0; i < 100; i++ {
		f, _ := zw.Create(strings.Repeat("x", i) + ".xml")
		f.Write([]byte("<feedback/>"))
	}
	zw.Close()
	if _, _, err := parseAny(members.Bytes()); err == nil || !strings.Contains(err.Error(), "100 files") {
		t.Errorf("100 zip members: %v", err)
	}
}

// bomb is a gzip file of n GiB of well-formed XML (<feedback> and
// empty elements): one member of 8 MiB compressed once and repeated
// (gzip allows members one after another), so the test builds a 10 GB
// bomb cheaply, and the parser meets nothing to refuse but the size.
func bomb(t *testing.T, gib int) []byte {
	var head, one bytes.Buffer
	w := gzip.NewWriter(&head)
	w.Write([]byte("<feedback>"))
	w.Close()
	w, _ = gzip.NewWriterLevel(&one, gzip.BestCompression)
	w.Write(bytes.Repeat([]byte("<x/>"), 2<<20))
	w.Close()
	return append(head.Bytes(), bytes.Repeat(one.Bytes(), gib*128)...)
}

func TestDecompressionBomb(t *testing.T) {
	b := bomb(t, 10)
	t.Logf("a %d GiB bomb in %d KiB", 10, len(b)>>10)
	for name, in := range map[string][]byte{
		"bare gzip":       b,
		"gzip attachment": email("application/gzip", "r.xml.gz", "base64", b),
	} {
		cr := &counted{r: bytes.NewReader(in)}
		x, _, err := Open(cr, Limits{})
		if err == nil {
			_, err = Parse(x, Limits{})
		}
		if !errors.Is(err, reportmail.ErrBomb) && !strings.Contains(err.Error(), "bomb") {
			t.Errorf("%s: %v, want a refused bomb", name, err)
		}
		// Refused within its first megabytes: the input read is small.
		if cr.n > 8<<20 {
			t.Errorf("%s: read %d bytes of the bomb before refusing it", name, cr.n)
		}
	}
	// A zip bomb: one member of 32 MiB of zeros, a thousand times its
	// compressed size (whatever size its header claims, the guard counts
	// what is read).
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	f, _ := zw.Create("r.xml")
	f.Write([]byte("<feedback>"))
	f.Write(make([]byte, 32<<20))
	zw.Close()
	x, _, err := Open(bytes.NewReader(zb.Bytes()), Limits{})
	if err == nil {
		_, err = io.Copy(io.Discard, x)
	}
	if !errors.Is(err, reportmail.ErrBomb) {
		t.Errorf("zip bomb: %v", err)
	}
}

// counted counts what was read through it.
type counted struct {
	r io.Reader
	n int64
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// What we send reads back to what we recorded: our own report through
// our own parser.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	r := NewRecorder(st, 100, nil, nil)
	day := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return day.Add(time.Hour) }
	rua := []string{"mailto:d@bank.example"}
	r.Record(verdict(mailauth.DMARCFail, "reject", "reject", rua), env)
	r.Record(verdict(mailauth.DMARCFail, "reject", "reject", rua), env)
	r.Record(verdict(mailauth.DMARCFail, "reject", "quarantine", rua, "mailing_list"), env)
	if err := r.writeAll(ctx, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	rows, _ := store.NewReportRows(st).Rows(ctx, "bank.example", day, day.Add(24*time.Hour))
	f, err := Build(Meta{OrgName: "O", Email: "e@x.example", Submitter: "x.example"}, "bank.example", day, day.Add(24*time.Hour), rows)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := f.Gzip()
	rep, _, err := parseAny(b)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Format != "rfc9990" || rep.ReportID != f.Metadata.ReportID || rep.MessageCount != 3 || len(rep.Records) != 2 {
		t.Fatalf("%+v", rep)
	}
	got := rep.Records[0]
	if got.Row.Count != 2 || got.Row.SourceIP != "203.0.113.5" || got.Identifiers.EnvelopeFrom != "evil.example" ||
		got.AuthResults.DKIM[0].Selector != "s1" || got.Row.PolicyEvaluated.Disposition != "reject" {
		t.Errorf("record %+v", got)
	}
	if rs := rep.Records[1].Row.PolicyEvaluated.Reasons; len(rs) != 1 || rs[0].Type != "mailing_list" {
		t.Errorf("reasons %+v", rs)
	}
}
