package dmarcreport

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

const stalwart = "testdata/stalwart"

// enum turns Stalwart's serde form into ours: "SoftFail" → "softfail",
// "SampledOut" → "sampled_out", null and "Unspecified" → "".
func enum(v any, snake bool) string {
	s, _ := v.(string)
	if s == "" || s == "Unspecified" {
		return ""
	}
	if !snake {
		return strings.ToLower(s)
	}
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// differs are where we read a fixture differently from Stalwart, on
// purpose: RFC 7489's sampled_out, which RFC 9990 dropped, Stalwart
// turns into "other"; we keep the reporter's word, which says more.
var differs = map[string]string{
	"005.xml record[0].reasons": "sampled_out/legacy sampling",
}

// Every report of the public suite (Stalwart's mail-auth fixtures:
// a draft report without namespace, Google, Fastmail, the RFC 9990
// sample, a legacy RFC 7489 report, and five as delivered by email,
// zipped or gzipped) reads to the expected values, field by field.
func TestConformanceReports(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(stalwart, "*.json"))
	if len(files) != 10 {
		t.Fatalf("want the 10 fixtures of %s, found %d", stalwart, len(files))
	}
	for _, jf := range files {
		base := strings.TrimSuffix(jf, ".json")
		in := base + ".xml"
		if _, err := os.Stat(in); err != nil {
			in = base + ".eml"
		}
		t.Run(filepath.Base(in), func(t *testing.T) {
			var want map[string]any
			b, _ := os.ReadFile(jf)
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.UseNumber()
			if err := dec.Decode(&want); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			x, _, err := Open(f, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := Parse(x, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			check := func(field, got, want string) {
				t.Helper()
				if d, ok := differs[filepath.Base(in)+" "+field]; ok {
					want = d
				}
				if got != want {
					t.Errorf("%s: %q, want %q", field, got, want)
				}
			}
			md := want["report_metadata"].(map[string]any)
			check("org_name", rep.OrgName, str(md["org_name"]))
			check("email", rep.Email, str(md["email"]))
			check("extra_contact_info", rep.ExtraContactInfo, str(md["extra_contact_info"]))
			check("report_id", rep.ReportID, str(md["report_id"]))
			dr := md["date_range"].(map[string]any)
			check("begin", fmt.Sprint(rep.DateRange.Begin), fmt.Sprint(dr["begin"]))
			check("end", fmt.Sprint(rep.DateRange.End), fmt.Sprint(dr["end"]))
			var errs []string
			for _, e := range md["error"].([]any) {
				errs = append(errs, str(e))
			}
			check("errors", strings.Join(rep.Errors, "|"), strings.Join(errs, "|"))

			pp := want["policy_published"].(map[string]any)
			check("domain", rep.Policy.Domain, str(pp["domain"]))
			check("p", rep.Policy.P, enum(pp["p"], false))
			check("sp", rep.Policy.SP, enum(pp["sp"], false))
			check("np", rep.Policy.NP, enum(pp["np"], false))
			align := map[string]string{"relaxed": "r", "strict": "s", "": ""}
			check("adkim", rep.Policy.ADKIM, align[enum(pp["adkim"], false)])
			check("aspf", rep.Policy.ASPF, align[enum(pp["aspf"], false)])
			check("fo", rep.Policy.FO, str(pp["fo"]))
			testing := "n"
			if pp["testing"] == true {
				testing = "y"
			}
			if rep.Policy.Testing != "" || testing == "y" {
				check("testing", rep.Policy.Testing, testing)
			}
			check("discovery_method", rep.Policy.Discovery, enum(pp["discovery_method"], false))

			recs := want["record"].([]any)
			if len(rep.Records) != len(recs) || rep.RecordCount != len(recs) {
				t.Fatalf("%d records, want %d", len(rep.Records), len(recs))
			}
			for i, wr := range recs {
				w := wr.(map[string]any)
				g := rep.Records[i]
				row := w["row"].(map[string]any)
				pe := row["policy_evaluated"].(map[string]any)
				p := fmt.Sprintf("record[%d].", i)
				check(p+"source_ip", g.Row.SourceIP, str(row["source_ip"]))
				check(p+"count", fmt.Sprint(g.Row.Count), fmt.Sprint(row["count"]))
				check(p+"disposition", g.Row.PolicyEvaluated.Disposition, enum(pe["disposition"], false))
				check(p+"dkim", g.Row.PolicyEvaluated.DKIM, enum(pe["dkim"], false))
				check(p+"spf", g.Row.PolicyEvaluated.SPF, enum(pe["spf"], false))
				var reasons []string
				for _, r := range pe["reason"].([]any) {
					rm := r.(map[string]any)
					reasons = append(reasons, enum(rm["type_"], true)+"/"+str(rm["comment"]))
				}
				var got []string
				for _, r := range g.Row.PolicyEvaluated.Reasons {
					got = append(got, r.Type+"/"+r.Comment)
				}
				check(p+"reasons", strings.Join(got, ","), strings.Join(reasons, ","))
				id := w["identifiers"].(map[string]any)
				check(p+"envelope_to", g.Identifiers.EnvelopeTo, str(id["envelope_to"]))
				check(p+"envelope_from", g.Identifiers.EnvelopeFrom, str(id["envelope_from"]))
				check(p+"header_from", g.Identifiers.HeaderFrom, str(id["header_from"]))
				ar := w["auth_results"].(map[string]any)
				var wd, gd []string
				for _, d := range ar["dkim"].([]any) {
					dm := d.(map[string]any)
					wd = append(wd, str(dm["domain"])+"/"+str(dm["selector"])+"/"+enum(dm["result"], false)+"/"+str(dm["human_result"]))
				}
				for _, d := range g.AuthResults.DKIM {
					gd = append(gd, d.Domain+"/"+d.Selector+"/"+d.Result+"/"+d.HumanResult)
				}
				check(p+"auth_results.dkim", strings.Join(gd, ","), strings.Join(wd, ","))
				// Stalwart's MailFrom is the report's "mfrom".
				scope := map[string]string{"mailfrom": "mfrom", "helo": "helo", "": ""}
				var ws, gs []string
				for _, d := range ar["spf"].([]any) {
					dm := d.(map[string]any)
					ws = append(ws, str(dm["domain"])+"/"+scope[enum(dm["scope"], false)]+"/"+enum(dm["result"], false)+"/"+str(dm["human_result"]))
				}
				for _, d := range g.AuthResults.SPF {
					gs = append(gs, d.Domain+"/"+d.Scope+"/"+d.Result+"/"+d.HumanResult)
				}
				check(p+"auth_results.spf", strings.Join(gs, ","), strings.Join(ws, ","))
			}
		})
	}
}
