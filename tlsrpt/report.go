// Package tlsrpt is SMTP TLS Reporting (RFC 8460): the reports other
// providers send about the TLS connections they made, or failed to
// make, to our customers' MX hosts, read with the caps hostile input
// needs, stored per policy domain (Ingest), and added up (Summarize).
// Taking them from mail is package reportmail's job.
package tlsrpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Report is one aggregate TLS report (RFC 8460 4.3).
type Report struct {
	OrganizationName string    `json:"organization-name"`
	DateRange        DateRange `json:"date-range"`
	ContactInfo      string    `json:"contact-info"`
	ReportID         string    `json:"report-id"`
	Policies         []Result  `json:"policies"`
}

// DateRange is the period a report covers.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// Result is what the reporter saw for one policy.
type Result struct {
	Policy         Policy          `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details"`
}

// Policy is the policy the reporter applied (RFC 8460 4.3.1).
type Policy struct {
	Type   string   `json:"policy-type"` // sts, tlsa, no-policy-found
	String []string `json:"policy-string"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host"`
}

// Summary counts the sessions (RFC 8460 4.3.2).
type Summary struct {
	Successful int64 `json:"total-successful-session-count"`
	Failed     int64 `json:"total-failure-session-count"`
}

// FailureDetail is one kind of failure, from one sending MTA to one MX
// (RFC 8460 4.3.3, 4.3.4).
type FailureDetail struct {
	// ResultType: starttls-not-supported, certificate-host-mismatch,
	// certificate-expired, certificate-not-trusted, validation-failure,
	// tlsa-invalid, dnssec-invalid, dane-required,
	// sts-policy-fetch-error, sts-policy-invalid, sts-webpki-invalid
	// (RFC 8460 4.3.4), or another a reporter invents, kept as it came.
	ResultType            string `json:"result-type"`
	SendingMTAIP          string `json:"sending-mta-ip"`
	ReceivingMXHostname   string `json:"receiving-mx-hostname"`
	ReceivingMXHelo       string `json:"receiving-mx-helo,omitempty"`
	ReceivingIP           string `json:"receiving-ip,omitempty"`
	FailedSessionCount    int64  `json:"failed-session-count"`
	AdditionalInformation string `json:"additional-information,omitempty"`
	FailureReasonCode     string `json:"failure-reason-code,omitempty"`
}

// Limits cap what a report may hold: a sender controls every count.
type Limits struct {
	MaxBytes    int64 // the JSON, decompressed
	MaxPolicies int
	MaxDetails  int // failure details, all policies together
}

// DefaultLimits are generous for real reports (the biggest senders list
// a few hundred failure details a day).
func DefaultLimits() Limits {
	return Limits{MaxBytes: 32 << 20, MaxPolicies: 10000, MaxDetails: 100000}
}

// ErrNotReport is wrapped by every error about the report's content.
var ErrNotReport = errors.New("tlsrpt: not a TLS report")

// maxCount bounds a session count: a day of sessions of the busiest
// sender is far below it; a larger one is a lie that would only distort
// the sums.
const maxCount = 1 << 40

// Parse reads one report's JSON (decompressed) and checks it.
func Parse(r io.Reader, lim Limits) (*Report, error) {
	b, err := io.ReadAll(io.LimitReader(r, lim.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: reading: %w", err)
	}
	if int64(len(b)) > lim.MaxBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrNotReport, lim.MaxBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotReport, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: more after the report object", ErrNotReport)
	}
	switch {
	case rep.OrganizationName == "" || rep.ReportID == "":
		return nil, fmt.Errorf("%w: no organization-name or report-id", ErrNotReport)
	case rep.DateRange.Start.IsZero() || rep.DateRange.End.Before(rep.DateRange.Start):
		return nil, fmt.Errorf("%w: date-range %v to %v", ErrNotReport, rep.DateRange.Start, rep.DateRange.End)
	case len(rep.Policies) == 0:
		return nil, fmt.Errorf("%w: no policies", ErrNotReport)
	case len(rep.Policies) > lim.MaxPolicies:
		return nil, fmt.Errorf("%w: %d policies, more than %d", ErrNotReport, len(rep.Policies), lim.MaxPolicies)
	}
	details := 0
	for i, p := range rep.Policies {
		where := fmt.Sprintf("policies[%d]", i)
		d := strings.ToLower(strings.TrimSuffix(p.Policy.Domain, "."))
		if d == "" || strings.ContainsAny(d, " /\\:@\r\n\t") {
			return nil, fmt.Errorf("%w: %s: policy-domain %q", ErrNotReport, where, clip(p.Policy.Domain))
		}
		rep.Policies[i].Policy.Domain = d
		switch p.Policy.Type {
		case "sts", "tlsa", "no-policy-found":
		default:
			return nil, fmt.Errorf("%w: %s: policy-type %q", ErrNotReport, where, clip(p.Policy.Type))
		}
		if !countOK(p.Summary.Successful) || !countOK(p.Summary.Failed) {
			return nil, fmt.Errorf("%w: %s: session counts %d and %d", ErrNotReport, where, p.Summary.Successful, p.Summary.Failed)
		}
		details += len(p.FailureDetails)
		if details > lim.MaxDetails {
			return nil, fmt.Errorf("%w: more than %d failure details", ErrNotReport, lim.MaxDetails)
		}
		for j, f := range p.FailureDetails {
			if f.ResultType == "" || !countOK(f.FailedSessionCount) {
				return nil, fmt.Errorf("%w: %s.failure-details[%d]: result-type %q, count %d", ErrNotReport, where, j, clip(f.ResultType), f.FailedSessionCount)
			}
			if f.SendingMTAIP != "" {
				if _, err := netip.ParseAddr(f.SendingMTAIP); err != nil {
					return nil, fmt.Errorf("%w: %s.failure-details[%d]: sending-mta-ip %q", ErrNotReport, where, j, clip(f.SendingMTAIP))
				}
			}
		}
	}
	return &rep, nil
}

func countOK(n int64) bool { return n >= 0 && n <= maxCount }

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
