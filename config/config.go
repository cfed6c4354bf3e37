// Package config reads and validates wehr's one YAML configuration file.
//
// Decoding is strict: an unknown key, a value of the wrong type or a
// duration without a unit is an error that names the key and its line.
// Load validates everything once; the daemons never meet a bad value at
// run time. With no file, Default applies: authserv-id = the host name,
// DNS from /etc/resolv.conf, no state directory.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/spf"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/milter"
	"github.com/wehr/wehr/policyd"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/store"
)

// DefaultPath is where wehr looks for its config when --config is not
// given. A missing file at this path means built-in defaults.
const DefaultPath = "/etc/wehr/wehr.yaml"

// Config is the whole configuration.
type Config struct {
	// AuthservID is the authserv-id of our Authentication-Results
	// headers (RFC 8601 2.5). Empty: the host name.
	AuthservID string `yaml:"authserv_id"`
	// Hostname is this host's name, e.g. for SPF's %{r} macro. Empty: the
	// host name as the system reports it.
	Hostname string          `yaml:"hostname"`
	Log      Log             `yaml:"log"`
	DNS      resolver.Config `yaml:"dns"`
	SPF      spf.Config      `yaml:"spf"`
	DKIM     DKIM            `yaml:"dkim"`
	DMARC    DMARC           `yaml:"dmarc"`
	Limits   Limits          `yaml:"limits"`
	Milter   milter.Config   `yaml:"milter"`
	Store    store.Config    `yaml:"store"`
	Policyd  Policyd         `yaml:"policyd"`
	Metrics  Metrics         `yaml:"metrics"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen      string `yaml:"listen"`
	AllowRemote bool   `yaml:"allow_remote"`
}

// Policyd configures the policy daemon.
type Policyd struct {
	Listen           string        `yaml:"listen"`
	AllowRemote      bool          `yaml:"allow_remote"`
	RequestTimeout   time.Duration `yaml:"request_timeout"`
	IdleTimeout      time.Duration `yaml:"idle_timeout"`
	MaxConnections   int           `yaml:"max_connections"`
	SocketMode       string        `yaml:"socket_mode"`
	SocketOwner      string        `yaml:"socket_owner"`
	SocketGroup      string        `yaml:"socket_group"`
	SkipNetworks     []string      `yaml:"skip_networks"`
	LocalDomains     []string      `yaml:"local_domains"`
	ExemptRecipients []string      `yaml:"exempt_recipients"`
	ReferenceURL     string        `yaml:"reference_url"`
	RejectScore      float64       `yaml:"reject_score"`
	SuspiciousScore  float64       `yaml:"suspicious_score"`
	OnStoreError     string        `yaml:"on_store_error"`
	DNSLists         []DNSList     `yaml:"dns_lists"`
	Weights          Weights       `yaml:"weights"`
	Rates            Rates         `yaml:"rates"`
	Greylist         Greylist      `yaml:"greylist"`
	Submission       Submission    `yaml:"submission"`
}

// Submission configures the checks of authenticated submission.
type Submission struct {
	SenderLogin bool                 `yaml:"sender_login"`
	Classes     map[string]RateClass `yaml:"classes"`
	UserClasses map[string]string    `yaml:"user_classes"`
	Bulk        Bulk                 `yaml:"bulk"`
}

// RateClass caps what a user may send per window.
type RateClass struct {
	Messages   int64         `yaml:"messages"`
	Recipients int64         `yaml:"recipients"`
	Window     time.Duration `yaml:"window"`
}

// Bulk configures bulk routing.
type Bulk struct {
	Filter         string        `yaml:"filter"`
	MinRecipients  int64         `yaml:"min_recipients"`
	Senders        []string      `yaml:"senders"`
	VolumeMessages int64         `yaml:"volume_messages"`
	VolumeWindow   time.Duration `yaml:"volume_window"`
}

// DNSList is a DNS block- or allowlist.
type DNSList struct {
	Zone   string   `yaml:"zone"`
	Weight float64  `yaml:"weight"`
	Codes  []string `yaml:"codes"`
}

// Weights are the scores of the behaviour checks.
type Weights struct {
	HeloInvalid   float64 `yaml:"helo_invalid"`
	HeloClaimsUs  float64 `yaml:"helo_claims_us"`
	NoFCrDNS      float64 `yaml:"no_fcrdns"`
	Dynamic       float64 `yaml:"dynamic_name"`
	BadReputation float64 `yaml:"bad_reputation"`
}

// Rates caps connections, messages and recipients per client.
type Rates struct {
	ConnectionsPerIP     int64         `yaml:"connections_per_ip"`
	ConnectionsPerSubnet int64         `yaml:"connections_per_subnet"`
	MessagesPerIP        int64         `yaml:"messages_per_ip"`
	MessagesPerSubnet    int64         `yaml:"messages_per_subnet"`
	RecipientsPerIP      int64         `yaml:"recipients_per_ip"`
	RecipientsPerSubnet  int64         `yaml:"recipients_per_subnet"`
	Window               time.Duration `yaml:"window"`
}

// Greylist configures greylisting.
type Greylist struct {
	Enabled        bool          `yaml:"enabled"`
	Delay          time.Duration `yaml:"delay"`
	Window         time.Duration `yaml:"window"`
	Keep           time.Duration `yaml:"keep"`
	AllowlistAfter int64         `yaml:"allowlist_after"`
	SPFDomains     []string      `yaml:"spf_domains"`
}

// DKIM configures DKIM verification and signing.
type DKIM struct {
	MaxSignatures      int           `yaml:"max_signatures"`
	KeysDir            string        `yaml:"keys_dir"`
	SenderMap          string        `yaml:"sender_map"`
	UnauthorizedSender string        `yaml:"unauthorized_sender"`
	OnKeyError         string        `yaml:"on_key_error"`
	RotationOverlap    time.Duration `yaml:"rotation_overlap"`
	RotationCheck      time.Duration `yaml:"rotation_check"`
}

// DMARC configures DMARC evaluation and enforcement.
type DMARC struct {
	Discovery           string        `yaml:"discovery"`
	LegacyPct0IsTesting bool          `yaml:"legacy_pct0_is_testing"`
	Refusal             string        `yaml:"refusal"`
	OnTempError         string        `yaml:"on_temperror"`
	OnNoAuthor          string        `yaml:"on_no_author"`
	ReferenceURL        string        `yaml:"reference_url"`
	MaxAuthorDomains    int           `yaml:"max_author_domains"`
	TooManyAuthors      string        `yaml:"too_many_authors"`
	PassHistory         bool          `yaml:"pass_history"`
	PassHistoryKeep     time.Duration `yaml:"pass_history_keep"`
	TrustedForwarders   Override      `yaml:"trusted_forwarders"`
	LocalPolicy         Override      `yaml:"local_policy"`
	MailingLists        MailingLists  `yaml:"mailing_lists"`
}

// Override is a DMARC override list.
type Override struct {
	Networks    []string `yaml:"networks"`
	DKIMDomains []string `yaml:"dkim_domains,omitempty"`
	FromDomains []string `yaml:"from_domains,omitempty"`
	Disposition string   `yaml:"disposition"`
}

// MailingLists configures the mailing-list override.
type MailingLists struct {
	Enabled bool     `yaml:"enabled"`
	Domains []string `yaml:"domains"`
}

// Limits caps the work spent on one message.
type Limits struct {
	DNSQueries  int           `yaml:"dns_queries"`
	HeaderBytes int           `yaml:"header_bytes"`
	Deadline    time.Duration `yaml:"deadline"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

//go:embed defaults.yaml
var defaultsText string

// DefaultsText is the full default configuration, commented, as `wehr
// config defaults` prints it. Parsing it gives Default().
func DefaultsText() string { return defaultsText }

// Default returns the built-in configuration.
func Default() *Config {
	return &Config{
		Log:  Log{Level: "info", Format: "text"},
		DNS:  resolver.Default(),
		SPF:  spf.Default(),
		DKIM: DKIM{MaxSignatures: 5, UnauthorizedSender: "unsigned", OnKeyError: "tempfail", RotationOverlap: 7 * 24 * time.Hour, RotationCheck: time.Hour},
		DMARC: DMARC{
			Discovery:           mailauth.DiscoveryTreeWalk,
			LegacyPct0IsTesting: true,
			Refusal:             mailauth.RefuseEvidence,
			OnTempError:         "accept",
			OnNoAuthor:          "accept",
			MaxAuthorDomains:    5,
			TooManyAuthors:      "reject",
			PassHistory:         true,
			PassHistoryKeep:     180 * 24 * time.Hour,
			TrustedForwarders:   Override{Disposition: mailauth.PolicyNone},
			LocalPolicy:         Override{Disposition: mailauth.PolicyNone},
			MailingLists:        MailingLists{Enabled: true},
		},
		Limits: Limits{DNSQueries: 150, HeaderBytes: 1 << 20, Deadline: 20 * time.Second},
		Milter: milter.Default(),
		Store:  store.Default(),
		Policyd: Policyd{
			Listen:          "unix:/var/spool/postfix/wehr/policy.sock",
			SocketMode:      "0660",
			SocketGroup:     "postfix",
			RequestTimeout:  10 * time.Second,
			IdleTimeout:     330 * time.Second,
			MaxConnections:  500,
			SkipNetworks:    []string{"127.0.0.0/8", "::1/128"},
			RejectScore:     5,
			SuspiciousScore: 1,
			OnStoreError:    "dunno",
			Weights:         Weights{HeloInvalid: 1, HeloClaimsUs: 4, NoFCrDNS: 1, Dynamic: 1, BadReputation: 1},
			Rates:           Rates{Window: time.Minute},
			Greylist: Greylist{Enabled: true, Delay: 5 * time.Minute, Window: 4 * time.Hour, Keep: 35 * 24 * time.Hour,
				AllowlistAfter: 5, SPFDomains: []string{"outlook.com", "amazonses.com", "sendgrid.net", "google.com", "mailchimpapp.net"}},
			Submission: Submission{
				SenderLogin: true,
				Classes:     map[string]RateClass{"default": {Messages: 500, Recipients: 2000, Window: time.Hour}},
				Bulk:        Bulk{MinRecipients: 50, VolumeWindow: time.Hour},
			},
		},
	}
}

// Load reads, decodes and validates the file at path. The error, if any,
// is an *Errors listing every problem, or a read error.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// LoadDefault loads path if given; with path empty it loads DefaultPath
// if that file exists, else returns the built-in defaults. It returns the
// path actually read ("" for built-in defaults).
func LoadDefault(path string) (*Config, string, error) {
	if path != "" {
		c, err := Load(path)
		return c, path, err
	}
	c, err := Load(DefaultPath)
	if errors.Is(err, fs.ErrNotExist) {
		c = Default()
		if errs := c.finish(nil); len(errs) > 0 {
			return nil, "", &Errors{File: "(defaults)", Problems: errs}
		}
		return c, "", nil
	}
	return c, DefaultPath, err
}

// Parse decodes and validates config text; file names it in errors.
func Parse(file string, data []byte) (*Config, error) {
	c := Default()
	lines, problems := decodeStrict(data, c)
	reported := map[string]bool{}
	for _, p := range problems {
		reported[p.Key] = true
	}
	for _, p := range c.finish(lines) {
		if !reported[p.Key] {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		// In file order, as an editor shows them; problems without a
		// line (a key that is missing) last.
		sort.SliceStable(problems, func(i, j int) bool {
			li, lj := problems[i].Line, problems[j].Line
			if li == 0 || lj == 0 {
				return li != 0 && lj == 0
			}
			return li < lj
		})
		return nil, &Errors{File: file, Problems: problems}
	}
	return c, nil
}

// Problem is one thing wrong with a config file.
type Problem struct {
	Line int    // 0 if unknown
	Key  string // dotted path, e.g. dns.timeout
	Msg  string
}

func (p Problem) String() string {
	if p.Key == "" {
		return p.Msg
	}
	return p.Key + ": " + p.Msg
}

// Errors is every problem found in one file.
type Errors struct {
	File     string
	Problems []Problem
}

func (e *Errors) Error() string {
	return strings.Join(e.Lines(), "\n")
}

// Lines gives one line per problem, "FILE:LINE: key: message", the form
// editors and Ansible's validate: show.
func (e *Errors) Lines() []string {
	var out []string
	for _, p := range e.Problems {
		if p.Line > 0 {
			out = append(out, fmt.Sprintf("%s:%d: %s", e.File, p.Line, p))
		} else {
			out = append(out, fmt.Sprintf("%s: %s", e.File, p))
		}
	}
	return out
}

// finish fills in defaults that depend on the system and validates.
// lines maps key paths to their line in the file, for messages.
func (c *Config) finish(lines map[string]int) (ps []Problem) {
	bad := func(key, format string, args ...any) {
		ps = append(ps, Problem{Line: lines[key], Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	// The sections their packages own check themselves.
	sp := setting.New()
	c.DNS.Check(sp.Section("dns"))
	c.SPF.Check(sp.Section("spf"))
	c.Store.Check(sp.Section("store"))
	c.Milter.Check(sp.Section("milter"))
	defer func() {
		for _, p := range sp.List() {
			ps = append(ps, Problem{Line: lines[p.Key], Key: p.Key, Msg: p.Msg})
		}
	}()
	oneOf := func(key, v string, allowed ...string) {
		for _, a := range allowed {
			if v == a {
				return
			}
		}
		bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			bad("hostname", "not set, and the system host name is unknown (%v)", err)
		}
		c.Hostname = h
	}
	if c.AuthservID == "" {
		c.AuthservID = c.Hostname
	}
	if err := authres.CheckID(c.AuthservID); err != nil {
		bad("authserv_id", "%v", err)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}

	nilEmptySlices(reflect.ValueOf(c).Elem())
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be positive, got %v", d)
		}
	}

	if c.DKIM.MaxSignatures < 1 || c.DKIM.MaxSignatures > 50 {
		bad("dkim.max_signatures", "must be 1 to 50, got %d", c.DKIM.MaxSignatures)
	}
	if d := c.DKIM.KeysDir; d != "" {
		if !filepath.IsAbs(d) {
			bad("dkim.keys_dir", "%q must be an absolute path", d)
		} else if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			bad("dkim.keys_dir", "%q is not a directory (create it with mode 0700, owned by the user wehr runs as)", d)
		}
	}
	if p := c.DKIM.SenderMap; p != "" {
		if _, err := sendermap.Load(p); err != nil {
			bad("dkim.sender_map", "%v", err)
		}
	}
	oneOf("dkim.unauthorized_sender", c.DKIM.UnauthorizedSender, "unsigned", "refuse")
	oneOf("dkim.on_key_error", c.DKIM.OnKeyError, "tempfail", "unsigned")
	positive("dkim.rotation_overlap", c.DKIM.RotationOverlap)
	positive("dkim.rotation_check", c.DKIM.RotationCheck)
	oneOf("dmarc.discovery", c.DMARC.Discovery, mailauth.DiscoveryTreeWalk, mailauth.DiscoveryPSL)
	oneOf("dmarc.refusal", c.DMARC.Refusal, mailauth.RefuseEvidence, mailauth.RefuseHonor, mailauth.RefuseQuarantine)
	oneOf("dmarc.on_temperror", c.DMARC.OnTempError, "accept", "tempfail")
	oneOf("dmarc.on_no_author", c.DMARC.OnNoAuthor, "accept", "reject")
	oneOf("dmarc.too_many_authors", c.DMARC.TooManyAuthors, "reject", "quarantine")
	if u := c.DMARC.ReferenceURL; u != "" {
		if p, err := url.Parse(u); err != nil || p.Scheme == "" || strings.ContainsAny(u, " \r\n") {
			bad("dmarc.reference_url", "%q is not a URL", u)
		}
	}
	positive("dmarc.pass_history_keep", c.DMARC.PassHistoryKeep)
	if c.DMARC.MaxAuthorDomains < 1 || c.DMARC.MaxAuthorDomains > 20 {
		bad("dmarc.max_author_domains", "must be 1 to 20, got %d", c.DMARC.MaxAuthorDomains)
	}
	for _, ov := range []struct {
		key string
		o   Override
	}{{"dmarc.trusted_forwarders", c.DMARC.TrustedForwarders}, {"dmarc.local_policy", c.DMARC.LocalPolicy}} {
		key, o := ov.key, ov.o
		oneOf(key+".disposition", o.Disposition, mailauth.PolicyNone, mailauth.PolicyQuarantine)
		for i, n := range o.Networks {
			if _, err := parseNetwork(n); err != nil {
				bad(fmt.Sprintf("%s.networks[%d]", key, i), "%v", err)
			}
		}
		for _, l := range []struct {
			key     string
			domains []string
		}{{key + ".dkim_domains", o.DKIMDomains}, {key + ".from_domains", o.FromDomains}} {
			for i, d := range l.domains {
				if _, err := mailauth.ToASCII(d); err != nil || !strings.Contains(d, ".") {
					bad(fmt.Sprintf("%s[%d]", l.key, i), "%q is not a domain name", d)
				}
			}
		}
	}
	if len(c.DMARC.LocalPolicy.DKIMDomains) > 0 {
		bad("dmarc.local_policy.dkim_domains", "not supported: use dmarc.trusted_forwarders.dkim_domains")
	}
	if len(c.DMARC.TrustedForwarders.FromDomains) > 0 {
		bad("dmarc.trusted_forwarders.from_domains", "not supported: use dmarc.local_policy.from_domains")
	}
	for i, d := range c.DMARC.MailingLists.Domains {
		if _, err := mailauth.ToASCII(d); err != nil || !strings.Contains(d, ".") {
			bad(fmt.Sprintf("dmarc.mailing_lists.domains[%d]", i), "%q is not a domain name", d)
		}
	}

	if c.Limits.DNSQueries < 20 {
		bad("limits.dns_queries", "must be at least 20 (one SPF check alone may take 20), got %d", c.Limits.DNSQueries)
	}
	if c.Limits.HeaderBytes < 16384 {
		bad("limits.header_bytes", "must be at least 16384, got %d", c.Limits.HeaderBytes)
	}
	positive("limits.deadline", c.Limits.Deadline)

	if l := c.Metrics.Listen; l != "" {
		if a, err := listener.ParseAddress(l, c.Metrics.AllowRemote); err != nil {
			bad("metrics.listen", "%v", err)
		} else if a.Network != "tcp" {
			bad("metrics.listen", "%q: the metrics endpoint listens on inet:HOST:PORT", l)
		}
	}
	pd := c.Policyd
	if _, err := listener.ParseAddress(pd.Listen, pd.AllowRemote); err != nil {
		bad("policyd.listen", "%v", err)
	}
	checkSocket(bad, "policyd", pd.SocketMode)
	positive("policyd.request_timeout", pd.RequestTimeout)
	if pd.RequestTimeout > 60*time.Second {
		bad("policyd.request_timeout", "%v: keep it well under Postfix's smtpd_policy_service_timeout (100s)", pd.RequestTimeout)
	}
	positive("policyd.idle_timeout", pd.IdleTimeout)
	if pd.MaxConnections < 1 {
		bad("policyd.max_connections", "must be at least 1, got %d", pd.MaxConnections)
	}
	if pd.RejectScore <= 0 || pd.SuspiciousScore <= 0 || pd.SuspiciousScore > pd.RejectScore {
		bad("policyd.suspicious_score", "want 0 < suspicious_score (%g) <= reject_score (%g)", pd.SuspiciousScore, pd.RejectScore)
	}
	oneOf("policyd.on_store_error", pd.OnStoreError, "dunno", "tempfail")
	for i, l := range pd.DNSLists {
		key := fmt.Sprintf("policyd.dns_lists[%d]", i)
		if !strings.Contains(l.Zone, ".") {
			bad(key+".zone", "%q is not a DNS zone", l.Zone)
		}
		if l.Weight == 0 {
			bad(key+".weight", "0: give a listing a positive weight (blocklist) or a negative one (allowlist)")
		}
		for j, code := range l.Codes {
			if _, err := parseNetwork(code); err != nil {
				bad(fmt.Sprintf("%s.codes[%d]", key, j), "%v", err)
			}
		}
	}
	for i, n := range pd.SkipNetworks {
		if _, err := parseNetwork(n); err != nil {
			bad(fmt.Sprintf("policyd.skip_networks[%d]", i), "%v", err)
		}
	}
	for i, d := range pd.LocalDomains {
		if _, err := mailauth.ToASCII(d); err != nil || !strings.Contains(d, ".") {
			bad(fmt.Sprintf("policyd.local_domains[%d]", i), "%q is not a domain name", d)
		}
	}
	for _, v := range []int64{pd.Rates.ConnectionsPerIP, pd.Rates.ConnectionsPerSubnet, pd.Rates.MessagesPerIP, pd.Rates.MessagesPerSubnet, pd.Rates.RecipientsPerIP, pd.Rates.RecipientsPerSubnet} {
		if v < 0 {
			bad("policyd.rates", "limits must not be negative")
			break
		}
	}
	positive("policyd.rates.window", pd.Rates.Window)
	sub := pd.Submission
	for name, cl := range sub.Classes {
		key := "policyd.submission.classes." + name
		if cl.Messages < 0 || cl.Recipients < 0 {
			bad(key, "limits must not be negative")
		}
		positive(key+".window", cl.Window)
	}
	for user, class := range sub.UserClasses {
		if _, ok := sub.Classes[class]; !ok {
			bad("policyd.submission.user_classes."+user, "class %q is not in policyd.submission.classes", class)
		}
	}
	if f := sub.Bulk.Filter; f != "" && (!strings.Contains(f, ":") || strings.ContainsAny(f, " \t")) {
		bad("policyd.submission.bulk.filter", "%q: want transport:nexthop, e.g. smtp:[127.0.0.1]:2525", f)
	}
	if sub.Bulk.VolumeMessages > 0 {
		positive("policyd.submission.bulk.volume_window", sub.Bulk.VolumeWindow)
	}
	if g := pd.Greylist; g.Enabled {
		positive("policyd.greylist.delay", g.Delay)
		if g.Window <= g.Delay {
			bad("policyd.greylist.window", "%v must be longer than the delay %v", g.Window, g.Delay)
		}
		positive("policyd.greylist.keep", g.Keep)
	}
	if m := c.Milter; m.Timeout <= c.Limits.Deadline {
		bad("milter.timeout", "%v must be longer than limits.deadline %v, so that the engine's own deadline is what ends a slow check", m.Timeout, c.Limits.Deadline)
	}
	return ps
}

// SocketMode is milter.socket_mode as a file mode.

func parseMode(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode such as 0660", s)
	}
	return fs.FileMode(v), nil
}

// checkSocket validates the mode of a listen address's socket (key is
// "milter" or "policyd"). Whether the owner and group exist is checked by
// CheckSocketOwner when a daemon starts: `wehr check` on a machine
// without Postfix has no postfix group and needs none.
func checkSocket(bad func(key, format string, args ...any), key, mode string) {
	if _, err := parseMode(mode); err != nil {
		bad(key+".socket_mode", "%v", err)
	}
}

// CheckSocketOwner checks that the owner and group a daemon's unix
// socket gets exist (key: milter or policyd).
func CheckSocketOwner(key string, perms listener.SocketPerms) error {
	if err := listener.CheckOwner(perms.Owner, perms.Group); err != nil {
		return fmt.Errorf("%s.socket_group: %w (the group Postfix runs as must exist; with Postfix installed it is postfix)", key, err)
	}
	return nil
}

// MilterServer returns the milter's configuration.
func (c *Config) MilterServer() milter.Config {
	m := c.Milter
	m.AuthservID = c.AuthservID
	m.HeaderBytes = c.Limits.HeaderBytes
	m.RefuseUnauthorized = c.DKIM.UnauthorizedSender == "refuse"
	m.OnKeyError = c.DKIM.OnKeyError
	return m
}

// nilEmptySlices makes every empty list and mapping nil, so that
// "key: []" and an absent key give the same config.
func nilEmptySlices(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			nilEmptySlices(v.Field(i))
		}
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 && !v.IsNil() && v.CanSet() {
			v.Set(reflect.Zero(v.Type()))
		}
	}
}

// parseNetwork reads an IP address or a CIDR prefix.
func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func networks(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := parseNetwork(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Engine returns the verdict engine's configuration.
func (c *Config) Engine() mailauth.Config {
	d := c.DMARC
	return mailauth.Config{
		AuthservID:        c.AuthservID,
		SPF:               c.SPFChecker(),
		HeloCheck:         c.SPF.HeloCheck,
		DKIMMaxSignatures: c.DKIM.MaxSignatures,
		DNSBudget:         c.Limits.DNSQueries,
		HeaderBytes:       c.Limits.HeaderBytes,
		Deadline:          c.Limits.Deadline,
		DMARC: mailauth.DMARCConfig{
			Discovery:                d.Discovery,
			PctZeroIsTesting:         d.LegacyPct0IsTesting,
			Refusal:                  d.Refusal,
			TempfailOnTempError:      d.OnTempError == "tempfail",
			RejectNoAuthor:           d.OnNoAuthor == "reject",
			ReferenceURL:             d.ReferenceURL,
			MaxAuthorDomains:         d.MaxAuthorDomains,
			TooManyAuthorsQuarantine: d.TooManyAuthors == "quarantine",
			TrustedForwarders: mailauth.Override{Networks: networks(d.TrustedForwarders.Networks),
				DKIMDomains: d.TrustedForwarders.DKIMDomains, Disposition: d.TrustedForwarders.Disposition},
			LocalPolicy: mailauth.Override{Networks: networks(d.LocalPolicy.Networks),
				FromDomains: d.LocalPolicy.FromDomains, Disposition: d.LocalPolicy.Disposition},
			MailingLists: mailauth.MailingLists{Enabled: d.MailingLists.Enabled, Domains: d.MailingLists.Domains},
		},
	}
}

// CheckServer checks a --resolver value.
func CheckServer(s string) error {
	if _, err := resolver.NormalizeServer(s); err != nil {
		return fmt.Errorf("--resolver %q: want IP:PORT, e.g. 127.0.0.1:53", s)
	}
	return nil
}

// PolicydPipeline returns the policy pipeline's configuration.
func (c *Config) PolicydPipeline() policyd.Config {
	pd := c.Policyd
	var lists []policyd.List
	for _, l := range pd.DNSLists {
		lists = append(lists, policyd.List{Zone: strings.ToLower(l.Zone), Weight: l.Weight, Codes: networks(l.Codes)})
	}
	return policyd.Config{
		Hostname: c.Hostname, SkipNetworks: networks(pd.SkipNetworks), LocalDomains: pd.LocalDomains, ExemptRecipients: pd.ExemptRecipients, ReferenceURL: pd.ReferenceURL,
		Lists: lists,
		Weights: policyd.Weights{HeloInvalid: pd.Weights.HeloInvalid, HeloClaimsUs: pd.Weights.HeloClaimsUs, NoFCrDNS: pd.Weights.NoFCrDNS,
			Dynamic: pd.Weights.Dynamic, BadReputation: pd.Weights.BadReputation},
		RejectScore: pd.RejectScore, SuspiciousScore: pd.SuspiciousScore,
		Rates: policyd.Rates{ConnectionsPerIP: pd.Rates.ConnectionsPerIP, ConnectionsPerSubnet: pd.Rates.ConnectionsPerSubnet,
			MessagesPerIP: pd.Rates.MessagesPerIP, MessagesPerSubnet: pd.Rates.MessagesPerSubnet,
			RecipientsPerIP: pd.Rates.RecipientsPerIP, RecipientsPerSubnet: pd.Rates.RecipientsPerSubnet},
		RateWindow: pd.Rates.Window,
		Greylist: policyd.Greylisting{Enabled: pd.Greylist.Enabled, Delay: pd.Greylist.Delay, Window: pd.Greylist.Window,
			Keep: pd.Greylist.Keep, AllowlistAfter: pd.Greylist.AllowlistAfter, SPFDomains: pd.Greylist.SPFDomains},
		TempfailOnStoreError: pd.OnStoreError == "tempfail",
		Timeout:              pd.RequestTimeout,
		Submission:           c.submission(),
	}
}

func (c *Config) submission() policyd.Submission {
	sub := c.Policyd.Submission
	out := policyd.Submission{Classes: map[string]policyd.RateClass{}, UserClass: map[string]string{},
		Bulk: policyd.Bulk{Filter: sub.Bulk.Filter, MinRecipients: sub.Bulk.MinRecipients, Senders: sub.Bulk.Senders,
			VolumeMessages: sub.Bulk.VolumeMessages, VolumeWindow: sub.Bulk.VolumeWindow}}
	for n, cl := range sub.Classes {
		out.Classes[n] = policyd.RateClass{Messages: cl.Messages, Recipients: cl.Recipients, Window: cl.Window}
	}
	for u, cl := range sub.UserClasses {
		out.UserClass[strings.ToLower(u)] = cl
	}
	return out
}

// PolicydListen returns the policy daemon's listen address; listen, if
// not empty, replaces policyd.listen.
func (c *Config) PolicydListen(listen string) (listener.Address, listener.SocketPerms, error) {
	if listen == "" {
		listen = c.Policyd.Listen
	}
	a, err := listener.ParseAddress(listen, c.Policyd.AllowRemote)
	if err != nil {
		return a, listener.SocketPerms{}, err
	}
	mode, _ := parseMode(c.Policyd.SocketMode)
	return a, listener.SocketPerms{Mode: mode, Owner: c.Policyd.SocketOwner, Group: c.Policyd.SocketGroup}, nil
}

// SPFChecker is the spf: section with this host's name for the r macro.
func (c *Config) SPFChecker() spf.Config {
	s := c.SPF
	s.Receiver = c.Hostname
	return s
}
