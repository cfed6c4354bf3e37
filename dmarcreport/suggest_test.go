package dmarcreport

import (
	"strings"
	"testing"
)

func TestSuggest(t *testing.T) {
	sum := func(msgs, pass int64) Summary { return Summary{Domain: "bank.example", Messages: msgs, Pass: pass} }
	tests := []struct {
		name    string
		sum     Summary
		current string
		want    string // the suggested record's value
	}{
		{"no record", sum(0, 0), "", "v=DMARC1; p=none"},
		{"none, mostly passing", sum(1000, 990), "v=DMARC1; p=none; rua=mailto:d@bank.example", "v=DMARC1; p=quarantine; rua=mailto:d@bank.example"},
		{"none, failing", sum(1000, 900), "v=DMARC1; p=none; rua=mailto:d@bank.example", "v=DMARC1; p=none; rua=mailto:d@bank.example"},
		{"none, too few messages to say", sum(50, 50), "v=DMARC1; p=none", "v=DMARC1; p=none"},
		{"quarantine, passing", sum(1000, 995), "v=DMARC1; p=quarantine; sp=none", "v=DMARC1; p=reject; sp=none"},
		{"quarantine, not enough", sum(1000, 985), "v=DMARC1; p=quarantine", "v=DMARC1; p=quarantine"},
		{"reject stays", sum(1000, 10), "v=DMARC1; p=reject", "v=DMARC1; p=reject"},
		{"an odd p= is no policy", sum(1000, 1000), "v=DMARC1; p=<script>", "v=DMARC1; p=none"},
	}
	for _, tc := range tests {
		s := Suggest(tc.sum, tc.current)
		recs, err := s.Request.Records()
		if err != nil || len(recs) == 0 {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if recs[0].Value != tc.want || s.Why == "" {
			t.Errorf("%s: %q (%s), want %q", tc.name, recs[0].Value, s.Why, tc.want)
		}
		if strings.Contains(recs[0].Value, "<") {
			t.Errorf("%s: %q", tc.name, recs[0].Value)
		}
	}
}
