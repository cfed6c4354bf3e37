package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefaultsTextIsDefault(t *testing.T) {
	got, err := Parse("defaults.yaml", []byte(DefaultsText()))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	if ps := want.finish(nil); len(ps) > 0 {
		t.Fatal(ps)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the commented defaults differ from Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	for _, text := range []string{"", "# nothing\n", "---\n"} {
		c, err := Parse("x.yaml", []byte(text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if c.AuthservID == "" || c.AuthservID != c.Hostname {
			t.Fatalf("authserv-id %q, want the host name %q", c.AuthservID, c.Hostname)
		}
		if c.DNS.Timeout != 2*time.Second || c.SPF.Timeout != 10*time.Second {
			t.Fatalf("defaults not applied: %+v", c)
		}
	}
}

func TestParse(t *testing.T) {
	c, err := Parse("x.yaml", []byte(`
authserv_id: mx1.example.net
dns:
  servers: [192.0.2.53, "[2001:db8::53]:5353"]
  timeout: 500ms
spf:
  helo_check: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthservID != "mx1.example.net" || c.DNS.Timeout != 500*time.Millisecond || !c.SPF.HeloCheck ||
		len(c.DNS.Servers) != 2 || c.DNS.Attempts != 2 {
		t.Fatalf("got %+v", c)
	}
}

func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // each must appear in one line of the error
	}{
		{"unknown top key", "authserv: x\n", []string{"x.yaml:1: authserv: unknown key"}},
		{"unknown nested key with line", "dns:\n  timeout: 1s\n  retries: 3\n", []string{"x.yaml:3: dns.retries: unknown key"}},
		{"typo suggestion", "dns:\n  cache-size: 5\n", []string{"dns.cache-size: unknown key (did you mean cache_size?)"}},
		{"duration without unit", "dns:\n  timeout: 5\n", []string{"x.yaml:2: dns.timeout:", "with a unit"}},
		{"bad duration", "spf:\n  timeout: soon\n", []string{"spf.timeout:", `"soon" is not a duration`}},
		{"negative duration", "spf:\n  timeout: -1s\n", []string{"x.yaml:2: spf.timeout: must be positive"}},
		{"bad int", "dns:\n  attempts: many\n", []string{"x.yaml:2: dns.attempts:", "whole number"}},
		{"bad bool", "spf:\n  helo_check: perhaps\n", []string{"spf.helo_check:", "true or false"}},
		{"bad enum", "log:\n  level: loud\n", []string{"x.yaml:2: log.level:", "debug, info, warn, error"}},
		{"bad server", "dns:\n  servers: [ns1.example.net]\n", []string{"x.yaml:2: dns.servers[0]:"}},
		{"list where mapping", "dns: [1, 2]\n", []string{"dns: want a mapping"}},
		{"mapping where scalar", "authserv_id:\n  a: b\n", []string{"authserv_id: want a single value"}},
		{"bad authserv-id", "authserv_id: \"mx example\"\n", []string{"x.yaml:1: authserv_id:"}},
		{"bad explanation", "spf:\n  default_explanation: \"%{x}\"\n", []string{"spf.default_explanation:"}},
		{"attempts range", "dns:\n  attempts: 0\n", []string{"dns.attempts: must be 1 to 10"}},
		{"min above max", "dns:\n  min_ttl: 2h\n", []string{"dns.min_ttl:", "above dns.max_ttl"}},
		// YAML syntax errors at the line of the mistake.
		{"yaml flow list", "dns:\n  timeout: 5s\nmilter:\n  listen: [a\n", []string{"x.yaml:4: YAML syntax: did not find expected ',' or ']'"}},
		{"yaml flow map", "dns:\n  timeout: 5s\nmilter: {listen: a\n", []string{"x.yaml:3: YAML syntax: did not find expected ',' or '}'"}},
		{"yaml indentation", "dns:\n  timeout: 5s\n attempts: 2\n", []string{"x.yaml:3: YAML syntax: did not find expected key"}},
		{"yaml tab", "dns:\n\ttimeout: 5s\n", []string{"x.yaml:2: YAML syntax: found character that cannot start any token"}},
		{"yaml missing colon", "dns:\n  timeout 5s\n  attempts: 2\n", []string{"x.yaml:3: YAML syntax: mapping values are not allowed in this context (is a ':' missing after a key on the line before"}},
		{"yaml unclosed quote", "authserv_id: \"mx.example\nlog:\n  level: info\n", []string{"x.yaml:1: YAML syntax: a quote opened on this line is never closed"}},
		{"swapped letters", "log:\n  levle: debug\n", []string{"x.yaml:2: log.levle: unknown key (did you mean level?)"}},
		{"unknown section", "polciyd:\n  listen: x\n", []string{"x.yaml:1: polciyd: unknown key (did you mean policyd?)"}},
		{"no Go type names", "policyd:\n  reject_score: high\n", []string{`x.yaml:2: policyd.reject_score: "high" is not a number`}},
		{"duplicate key", "log:\n  level: info\n  level: debug\n", []string{"already defined"}},
		{"bad skip network", "policyd:\n  skip_networks: [127.0.0.0/8, localhost]\n", []string{"policyd.skip_networks[1]:", `"localhost" is not an IP address`}},
		{"several problems at once", "foo: 1\nlog:\n  level: x\n", []string{"foo: unknown key", "log.level:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.text))
			var ce *Errors
			if !errors.As(err, &ce) {
				t.Fatalf("want *Errors, got %v", err)
			}
			all := strings.Join(ce.Lines(), "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("error %q lacks %q", all, w)
				}
			}
			if strings.Contains(all, "float") || strings.Contains(all, "int64") {
				t.Errorf("a Go type name in %q", all)
			}
			if len(ce.Lines()) < len(tc.want) && tc.name == "several problems at once" {
				t.Errorf("want one line per problem, got %q", all)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// An explicitly named file must exist; LoadDefault with a path too.
	if _, _, err := LoadDefault(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadDefault with a missing named file: %v", err)
	}
	p := filepath.Join(dir, "wehr.yaml")
	if err := os.WriteFile(p, []byte("authserv_id: mx.example.net\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, used, err := LoadDefault(p)
	if err != nil || used != p || c.AuthservID != "mx.example.net" {
		t.Fatalf("LoadDefault(%s) = %+v, %q, %v", p, c, used, err)
	}
}

// FuzzParse: whatever the file holds, Parse returns a config or an
// *Errors whose every line names the file, and never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultsText()))
	f.Add([]byte("dns:\n  timout: 2s\n"))
	f.Add([]byte("spf:\n  timeout: 5\n"))
	f.Add([]byte("policyd:\n  dns_lists: [{zone: bl.test, weight: 5, codes: [127.0.0.2]}]\n  submission:\n    classes: {a: {messages: 1, window: 1h}}\n"))
	f.Add([]byte("store: {backend: redis, redis: {mode: sentinel, addrs: [a:1], master: m}}\n"))
	f.Add([]byte("a: &x [*x, *x]\n"))
	f.Add([]byte("\t- :\n{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var es *Errors
		if !errors.As(err, &es) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if len(es.Problems) == 0 {
			t.Fatal("Errors without problems")
		}
		for _, l := range es.Lines() {
			if !strings.HasPrefix(l, "fuzz.yaml:") {
				t.Fatalf("line %q does not name the file", l)
			}
		}
	})
}

// Problems come in file order, whichever check found them.
func TestProblemsInFileOrder(t *testing.T) {
	text := "log:\n  levle: debug\ndmarc:\n  refusal: sometimes\nmetrics:\n  lisen: x\npolicyd:\n  reject_score: high\n"
	_, err := Parse("x.yaml", []byte(text))
	var ce *Errors
	if !errors.As(err, &ce) {
		t.Fatalf("want *Errors, got %v", err)
	}
	var lines []int
	for _, p := range ce.Problems {
		lines = append(lines, p.Line)
	}
	if fmt.Sprint(lines) != "[2 4 6 8]" {
		t.Fatalf("lines %v:\n%s", lines, err)
	}
}
