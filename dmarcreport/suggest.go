package dmarcreport

import (
	"fmt"
	"strings"
)

// Suggestion is the DMARC policy wehr suggests for a domain: the next
// step from what it publishes, once the reports show its own mail
// passes.
type Suggestion struct {
	Request PolicyRequest
	Why     string
}

// Thresholds of Suggest: a step toward reject once this share of at
// least suggestMinMessages messages passes DMARC.
const (
	suggestMinMessages = 100
	quarantineAt       = 0.98 // from p=none
	rejectAt           = 0.99 // from p=quarantine
)

// Suggest is the next DMARC policy for the domain of sum, whose
// published record is current ("" when it publishes none): p=none to
// start receiving reports; from none to quarantine, and from
// quarantine to reject, once the reports show that nearly all of the
// domain's mail passes (what still fails is then most likely forged).
// The report addresses of the current record are kept.
func Suggest(sum Summary, current string) Suggestion {
	tags := map[string]string{}
	for _, t := range strings.Split(current, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(t), "="); ok {
			tags[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	req := PolicyRequest{Domain: sum.Domain, Policy: "none", Subdomain: lowerPolicy(tags["sp"]), ADKIM: tags["adkim"], ASPF: tags["aspf"]}
	for _, u := range strings.Split(tags["rua"], ",") {
		if a, ok := strings.CutPrefix(strings.TrimSpace(u), "mailto:"); ok && a != "" {
			req.RUA = append(req.RUA, a)
		}
	}
	rate := 0.0
	if sum.Messages > 0 {
		rate = float64(sum.Pass) / float64(sum.Messages)
	}
	enough := sum.Messages >= suggestMinMessages
	switch p := lowerPolicy(tags["p"]); {
	case current == "":
		return Suggestion{req, "no DMARC record: start with p=none and a report address, to learn who sends mail as the domain"}
	case p == "":
		return Suggestion{req, "the published record has no valid p=: start again from p=none"}
	case p == "none" && enough && rate >= quarantineAt:
		req.Policy = "quarantine"
		return Suggestion{req, fmt.Sprintf("%.1f %% of %d messages pass DMARC: quarantine what fails", 100*rate, sum.Messages)}
	case p == "none":
		return Suggestion{req, fmt.Sprintf("%.1f %% of %d messages pass DMARC: fix the failing sources you know before a stricter policy", 100*rate, sum.Messages)}
	case p == "quarantine" && enough && rate >= rejectAt:
		req.Policy = "reject"
		return Suggestion{req, fmt.Sprintf("%.1f %% of %d messages pass DMARC: reject what fails", 100*rate, sum.Messages)}
	default:
		req.Policy = p
		return Suggestion{req, "keep the published policy"}
	}
}

func lowerPolicy(p string) string {
	switch p = strings.ToLower(p); p {
	case "none", "quarantine", "reject":
		return p
	}
	return ""
}
