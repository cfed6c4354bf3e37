package dmarcreport

import (
	"net"
	"net/mail"
	"strings"
	"time"

	"github.com/wehr/wehr/setting"
)

// Config is the reports: section of the configuration file.
type Config struct {
	// Record keeps a row in the store for every received message whose
	// DMARC policy asks for aggregate reports (rua).
	Record bool `yaml:"record"`
	// Queue is how many rows wait for the store while it does not
	// answer; past it rows are dropped, counted and logged.
	Queue int `yaml:"queue"`

	// Send lets wehr serve send the reports of each finished period on
	// its own (wehr dmarc report send does it from cron either way).
	Send bool `yaml:"send"`
	// From is the reporting address: the reports' From and envelope
	// sender, where bounces of reports arrive. Required to send.
	From string `yaml:"from"`
	// OrgName is the reporting organisation named in every report.
	// Empty: Submitter.
	OrgName string `yaml:"org_name"`
	// Submitter is the domain of the Mail Receiver in the reports'
	// subject, file name and report id. Empty: the domain of From.
	Submitter string `yaml:"submitter"`
	// Contact is extra_contact_info: where a domain owner asks about
	// the reports (a URL or an address). Optional.
	Contact string `yaml:"contact"`
	// Relay is the SMTP server that takes the reports (host:port).
	Relay string `yaml:"relay"`
	// Rate is how many report messages are sent per second at most.
	Rate float64 `yaml:"rate"`
	// Period is the length of a reporting period; periods begin at
	// midnight UTC, so it divides a day.
	Period time.Duration `yaml:"period"`
	// Suppress lists addresses that never get a report (they bounce or
	// asked not to); wehr dmarc suppress adds to a list in the store.
	Suppress []string `yaml:"suppress"`
	// Failed is the folder where wehr dmarc ingest keeps a report it
	// cannot read, with the reason, instead of bouncing it.
	Failed string `yaml:"failed"`
}

// Default is the reports: section's defaults.
func Default() Config {
	return Config{Record: true, Queue: 10000, Relay: "127.0.0.1:25", Rate: 1, Period: 24 * time.Hour,
		Failed: "/var/lib/wehr/reports-failed"}
}

// Check reports the problems of the reports: section.
func (c Config) Check(p *setting.Problems) {
	if c.Queue < 1 || c.Queue > 1_000_000 {
		p.Add("queue", "must be 1 to 1000000, got %d", c.Queue)
	}
	if c.From != "" {
		if a, err := mail.ParseAddress(c.From); err != nil || a.Name != "" || !strings.Contains(a.Address, "@") {
			p.Add("from", "%q is not one address (write it as user@domain)", c.From)
		}
	} else if c.Send {
		p.Add("from", "required when send is true: the address the reports come from and their bounces go to")
	}
	if c.Submitter != "" && !setting.IsDomain(c.Submitter) {
		p.Add("submitter", "%q is not a domain name", c.Submitter)
	}
	if _, _, err := net.SplitHostPort(c.Relay); err != nil {
		p.Add("relay", "%q is not host:port (%v)", c.Relay, err)
	}
	if c.Rate <= 0 || c.Rate > 1000 {
		p.Add("rate", "must be above 0 and at most 1000 messages per second, got %v", c.Rate)
	}
	if c.Period < time.Hour || c.Period > 24*time.Hour || (24*time.Hour)%c.Period != 0 || c.Period%time.Hour != 0 {
		p.Add("period", "must be whole hours that divide a day (1h, 2h, 3h, 4h, 6h, 8h, 12h, 24h), got %v", c.Period)
	}
	for _, s := range c.Suppress {
		if a, err := mail.ParseAddress(s); err != nil || a.Name != "" {
			p.Add("suppress", "%q is not an address", s)
		}
	}
	if c.Failed == "" {
		p.Add("failed", "must name a folder")
	}
}

// Meta is the report metadata the configuration names.
func (c Config) Meta() Meta {
	sub := c.Submitter
	if sub == "" {
		sub = hostOf(c.From)
	}
	org := c.OrgName
	if org == "" {
		org = sub
	}
	return Meta{OrgName: org, Email: c.From, Submitter: sub, ExtraContactInfo: c.Contact, Generator: "wehr"}
}
