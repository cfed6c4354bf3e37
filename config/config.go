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
	Policyd  policyd.Config  `yaml:"policyd"`
	Metrics  Metrics         `yaml:"metrics"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen      string `yaml:"listen"`
	AllowRemote bool   `yaml:"allow_remote"`
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
		Limits:  Limits{DNSQueries: 150, HeaderBytes: 1 << 20, Deadline: 20 * time.Second},
		Milter:  milter.Default(),
		Store:   store.Default(),
		Policyd: policyd.Default(),
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
	c.Policyd.Check(sp.Section("policyd"))
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

	if m := c.Milter; m.Timeout <= c.Limits.Deadline {
		bad("milter.timeout", "%v must be longer than limits.deadline %v, so that the engine's own deadline is what ends a slow check", m.Timeout, c.Limits.Deadline)
	}
	return ps
}

// SocketMode is milter.socket_mode as a file mode.

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
	pc := c.Policyd
	pc.Hostname = c.Hostname
	return pc
}

// SPFChecker is the spf: section with this host's name for the r macro.
func (c *Config) SPFChecker() spf.Config {
	s := c.SPF
	s.Receiver = c.Hostname
	return s
}
