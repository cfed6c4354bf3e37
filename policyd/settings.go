package policyd

import (
	"fmt"
	"strings"
	"time"

	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
)

// Default is the policyd: section's defaults.
func Default() Config {
	return Config{
		Settings:        listener.Settings{Listen: "unix:/var/spool/postfix/wehr/policy.sock", SocketMode: "0660", SocketGroup: "postfix"},
		RequestTimeout:  10 * time.Second,
		IdleTimeout:     330 * time.Second,
		MaxConnections:  500,
		SkipNetworks:    setting.Networks("127.0.0.0/8", "::1/128"),
		RejectScore:     5,
		SuspiciousScore: 1,
		OnStoreError:    "dunno",
		Weights:         Weights{HeloInvalid: 1, HeloClaimsUs: 4, NoFCrDNS: 1, Dynamic: 1, BadReputation: 1},
		Rates:           Rates{Window: time.Minute},
		Greylist: Greylisting{Enabled: true, Delay: 5 * time.Minute, Window: 4 * time.Hour, Keep: 35 * 24 * time.Hour,
			AllowlistAfter: 5, SPFDomains: []string{"outlook.com", "amazonses.com", "sendgrid.net", "google.com", "mailchimpapp.net"}},
		Submission: Submission{
			SenderLogin: true,
			Classes:     map[string]RateClass{"default": {Messages: 500, Recipients: 2000, Window: time.Hour}},
			Bulk:        Bulk{MinRecipients: 50, VolumeWindow: time.Hour},
		},
	}
}

// Check reports the problems of the policyd: section.
func (c Config) Check(p *setting.Problems) {
	c.Settings.Check(p)
	p.Positive("request_timeout", c.RequestTimeout)
	if c.RequestTimeout > 60*time.Second {
		p.Add("request_timeout", "%v: keep it well under Postfix's smtpd_policy_service_timeout (100s)", c.RequestTimeout)
	}
	p.Positive("idle_timeout", c.IdleTimeout)
	if c.MaxConnections < 1 {
		p.Add("max_connections", "must be at least 1, got %d", c.MaxConnections)
	}
	if c.RejectScore <= 0 || c.SuspiciousScore <= 0 || c.SuspiciousScore > c.RejectScore {
		p.Add("suspicious_score", "want 0 < suspicious_score (%g) <= reject_score (%g)", c.SuspiciousScore, c.RejectScore)
	}
	p.OneOf("on_store_error", c.OnStoreError, "dunno", "tempfail")
	for i, l := range c.DNSLists {
		lp := p.Section(fmt.Sprintf("dns_lists[%d]", i))
		if !strings.Contains(l.Zone, ".") {
			lp.Add("zone", "%q is not a DNS zone", l.Zone)
		}
		if l.Weight == 0 {
			lp.Add("weight", "0: give a listing a positive weight (blocklist) or a negative one (allowlist)")
		}
	}
	p.Domains("local_domains", c.LocalDomains)
	r := c.Rates
	for _, v := range []int64{r.ConnectionsPerIP, r.ConnectionsPerSubnet, r.MessagesPerIP, r.MessagesPerSubnet, r.RecipientsPerIP, r.RecipientsPerSubnet} {
		if v < 0 {
			p.Add("rates", "limits must not be negative")
			break
		}
	}
	p.Positive("rates.window", r.Window)
	c.Submission.check(p.Section("submission"))
	if g := c.Greylist; g.Enabled {
		gp := p.Section("greylist")
		gp.Positive("delay", g.Delay)
		if g.Window <= g.Delay {
			gp.Add("window", "%v must be longer than the delay %v", g.Window, g.Delay)
		}
		gp.Positive("keep", g.Keep)
	}
}

func (s Submission) check(p *setting.Problems) {
	for name, cl := range s.Classes {
		cp := p.Section("classes." + name)
		if cl.Messages < 0 || cl.Recipients < 0 {
			cp.Add("", "limits must not be negative")
		}
		cp.Positive("window", cl.Window)
	}
	for user, class := range s.UserClasses {
		if _, ok := s.Classes[class]; !ok {
			p.Add("user_classes."+user, "class %q is not in policyd.submission.classes", class)
		}
	}
	if f := s.Bulk.Filter; f != "" && (!strings.Contains(f, ":") || strings.ContainsAny(f, " \t")) {
		p.Add("bulk.filter", "%q: want transport:nexthop, e.g. smtp:[127.0.0.1]:2525", f)
	}
	if s.Bulk.VolumeMessages > 0 {
		p.Positive("bulk.volume_window", s.Bulk.VolumeWindow)
	}
}
