package tlsrpt

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestParseRFC8460Example: the report of RFC 8460 4.4 reads as written.
func TestParseRFC8460Example(t *testing.T) {
	f, err := os.Open("testdata/rfc8460.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := Parse(f, DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	p := r.Policies[0]
	got := fmt.Sprintf("%s %s %s %s %d/%d %d", r.OrganizationName, r.ReportID, r.DateRange.Start.Format("2006-01-02"), p.Policy.Domain,
		p.Summary.Successful, p.Summary.Failed, len(p.FailureDetails))
	if want := "Company-X 5065427c-23d3-47ca-b6e0-946ea0e8c4be 2016-04-01 company-y.example 5326/303 3"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if d := p.FailureDetails[1]; d.ResultType != "starttls-not-supported" || d.FailedSessionCount != 200 || d.ReceivingIP != "203.0.113.56" {
		t.Errorf("failure detail %+v", d)
	}
}

// TestParseHostile: what a sender controls (counts, sizes, fields) gets
// a clear error, never a report that distorts the sums.
func TestParseHostile(t *testing.T) {
	base, _ := os.ReadFile("testdata/rfc8460.json")
	mod := func(old, new string) string { return strings.Replace(string(base), old, new, 1) }
	many := `"failure-details": [` + strings.Repeat(`{"result-type":"x","failed-session-count":1},`, 200) + `{"result-type":"x","failed-session-count":1}]`
	tests := []struct{ name, in, want string }{
		{"negative count", mod("5326", "-5"), "session counts"},
		{"absurd count", mod("5326", "9223372036854775807"), "session counts"},
		{"negative failures", mod(`"failed-session-count": 100`, `"failed-session-count": -1`), "count -1"},
		{"no report id", mod(`"report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",`, ""), "report-id"},
		{"end before start", mod("2016-04-01T23:59:59Z", "2016-03-01T00:00:00Z"), "date-range"},
		{"odd policy type", mod(`"policy-type": "sts"`, `"policy-type": "mystery"`), "policy-type"},
		{"domain with a slash", mod(`"policy-domain": "company-y.example"`, `"policy-domain": "../etc/passwd"`), "policy-domain"},
		{"bad sending IP", mod(`"sending-mta-ip": "198.51.100.62"`, `"sending-mta-ip": "not an IP"`), "sending-mta-ip"},
		{"two objects", string(base) + "{}", "more after"},
		{"not JSON", "<feedback/>", "invalid character"},
		{"too many details", `{"organization-name":"x","report-id":"y","date-range":{"start-datetime":"2016-04-01T00:00:00Z","end-datetime":"2016-04-02T00:00:00Z"},
			"policies":[{"policy":{"policy-type":"sts","policy-domain":"a.example"},"summary":{},` + many + `}]}`, "more than 100 failure details"},
		{"too big", string(base) + strings.Repeat(" ", 5000), "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lim := DefaultLimits()
			lim.MaxDetails = 100
			if tc.name == "too big" {
				lim.MaxBytes = int64(len(base)) + 100
			}
			_, err := Parse(strings.NewReader(tc.in), lim)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrNotReport) {
				t.Errorf("%v, want ErrNotReport with %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("testdata/rfc8460.json")
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := Parse(strings.NewReader(string(in)), Limits{MaxBytes: 1 << 20, MaxPolicies: 100, MaxDetails: 1000})
		if err != nil {
			return
		}
		for _, p := range r.Policies {
			if p.Summary.Successful < 0 || p.Summary.Failed < 0 || p.Policy.Domain == "" {
				t.Fatalf("unsound report %+v", p)
			}
		}
	})
}
