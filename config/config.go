// Package config reads and validates wehr's one YAML configuration file.
//
// Each section belongs to the package it configures, which defines its
// type (with the yaml keys), its defaults and its checks (dns:
// resolver.Config, milter: milter.Config, policyd: policyd.Config, ...);
// this package composes them, decodes the file strictly (an unknown key,
// a value of the wrong type or a duration without a unit is an error
// that names the key and its line, with a suggestion), runs every
// section's checks and reports every problem at once as FILE:LINE: key:
// message, in file order. The few settings that span sections (the
// authserv-id, limits the milter shares with the engine) are joined
// here. Load validates everything once; the daemons never meet a bad
// value at run time. With no file, Default applies.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/wehr/wehr/arc"
	"github.com/wehr/wehr/authpolicy"
	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/metrics"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/spf"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/milter"
	"github.com/wehr/wehr/mtasts"
	"github.com/wehr/wehr/policyd"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/web"
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
	Hostname string               `yaml:"hostname"`
	Log      Log                  `yaml:"log"`
	DNS      resolver.Config      `yaml:"dns"`
	SPF      spf.Config           `yaml:"spf"`
	DKIM     dkimkeys.Config      `yaml:"dkim"`
	DMARC    mailauth.DMARCConfig `yaml:"dmarc"`
	Limits   mailauth.Limits      `yaml:"limits"`
	Milter   milter.Config        `yaml:"milter"`
	Store    store.Config         `yaml:"store"`
	Policyd  policyd.Config       `yaml:"policyd"`
	Metrics  metrics.Config       `yaml:"metrics"`
	Reports  dmarcreport.Config   `yaml:"reports"`
	// AuthPolicy is Dovecot's auth policy service.
	AuthPolicy authpolicy.Config `yaml:"authpolicy"`
	// ARC is whether and as whom we seal the mail we pass on.
	ARC arc.Config `yaml:"arc"`
	// MTASTS is the MTA-STS policy service Postfix asks before it
	// delivers (smtp_tls_policy_maps).
	MTASTS mtasts.Config `yaml:"mtasts"`
	// Web is the web view of the reports.
	Web web.Config `yaml:"web"`
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
		Log:        Log{Level: "info", Format: "text"},
		DNS:        resolver.Default(),
		SPF:        spf.Default(),
		DKIM:       dkimkeys.DefaultConfig(),
		DMARC:      mailauth.DefaultDMARC(),
		Limits:     mailauth.DefaultLimits(),
		Milter:     milter.Default(),
		Store:      store.Default(),
		Policyd:    policyd.Default(),
		Reports:    dmarcreport.Default(),
		AuthPolicy: authpolicy.Default(),
		ARC:        arc.Default(),
		MTASTS:     mtasts.Default(),
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
	c.DKIM.Check(sp.Section("dkim"))
	c.DMARC.Check(sp.Section("dmarc"))
	c.Limits.Check(sp.Section("limits"))
	c.Metrics.Check(sp.Section("metrics"))
	c.Reports.Check(sp.Section("reports"))
	c.AuthPolicy.Check(sp.Section("authpolicy"))
	c.ARC.Check(sp.Section("arc"))
	c.MTASTS.Check(sp.Section("mtasts"))
	c.Web.Check(sp.Section("web"))
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

	if m := c.Milter; m.Timeout <= c.Limits.Deadline {
		bad("milter.timeout", "%v must be longer than limits.deadline %v, so that the engine's own deadline is what ends a slow check", m.Timeout, c.Limits.Deadline)
	}
	for _, p := range sp.List() {
		ps = append(ps, Problem{Line: lines[p.Key], Key: p.Key, Msg: p.Msg})
	}
	return ps
}

// SocketMode is milter.socket_mode as a file mode.

// MilterServer returns the milter's configuration.
func (c *Config) MilterServer() milter.Config {
	m := c.Milter
	m.AuthservID = c.AuthservID
	m.HeaderBytes = c.Limits.HeaderBytes
	m.RefuseUnauthorized = c.DKIM.UnauthorizedSender == "refuse"
	m.OnKeyError = c.DKIM.OnKeyError
	m.ARC = c.ARC
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

// Engine returns the verdict engine's configuration.
func (c *Config) Engine() mailauth.Config {
	return mailauth.Config{AuthservID: c.AuthservID, SPF: c.SPFChecker(), HeloCheck: c.SPF.HeloCheck,
		DKIMMaxSignatures: c.DKIM.MaxSignatures, DMARC: c.DMARC, Limits: c.Limits, ARC: arc.Verifier{}}
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
