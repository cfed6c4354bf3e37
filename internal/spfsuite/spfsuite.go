// Package spfsuite loads the OpenSPF RFC 7208 test suite and serves each
// scenario's DNS data from a dnstest server, for the conformance tests of
// mailauth and of `wehr check spf`.
package spfsuite

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/wehr/wehr/resolver/dnstest"
)

// RFC7208 is the suite (release 2014.04 with later additions), copied from
// ../shared/conformance/spf/openspf; its licence is beside it.
//
//go:embed testdata/rfc7208-tests.yml
var RFC7208 []byte

// Scenario is one YAML document of the suite: tests sharing a zone.
type Scenario struct {
	Description string
	Tests       []Test
	zone        []zoneEntry
}

// Test is one SPF check and its expectation.
type Test struct {
	Name        string
	Spec        string
	Helo        string
	Host        string
	MailFrom    string
	Results     []string // acceptable results; the first is preferred
	Explanation string   // "" if the suite gives none; "DEFAULT" = the default
}

type zoneEntry struct {
	owner string
	items []zoneItem
}

type zoneItem struct {
	typ     string // "TXT", "SPF", "A", "AAAA", "MX", "PTR", "CNAME" or "TIMEOUT"
	strings []string
	none    bool
}

// Load parses a suite file.
func Load(data []byte) ([]Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []Scenario
	for {
		var doc struct {
			Description string
			Tests       yaml.Node
			Zonedata    yaml.Node
		}
		if err := dec.Decode(&doc); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("spfsuite: %w", err)
		}
		sc := Scenario{Description: doc.Description}
		if err := decodeTests(&doc.Tests, &sc); err != nil {
			return nil, err
		}
		if err := decodeZone(&doc.Zonedata, &sc); err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func decodeTests(n *yaml.Node, sc *Scenario) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		name := n.Content[i].Value
		var raw struct {
			Spec        yaml.Node
			Helo        string
			Host        string
			MailFrom    string `yaml:"mailfrom"`
			Result      yaml.Node
			Explanation string
		}
		if err := n.Content[i+1].Decode(&raw); err != nil {
			return fmt.Errorf("spfsuite: test %s: %w", name, err)
		}
		t := Test{Name: name, Helo: raw.Helo, Host: raw.Host, MailFrom: raw.MailFrom, Explanation: raw.Explanation}
		t.Spec = nodeStrings(&raw.Spec)[0]
		t.Results = nodeStrings(&raw.Result)
		sc.Tests = append(sc.Tests, t)
	}
	return nil
}

// nodeStrings reads a scalar or a sequence of scalars.
func nodeStrings(n *yaml.Node) []string {
	if n.Kind == yaml.SequenceNode {
		var out []string
		for _, c := range n.Content {
			out = append(out, c.Value)
		}
		return out
	}
	return []string{n.Value}
}

func decodeZone(n *yaml.Node, sc *Scenario) error {
	for i := 0; i+1 < len(n.Content); i += 2 {
		e := zoneEntry{owner: n.Content[i].Value}
		for _, it := range n.Content[i+1].Content {
			if it.Kind == yaml.ScalarNode {
				if it.Value != "TIMEOUT" {
					return fmt.Errorf("spfsuite: %s: unknown item %q", e.owner, it.Value)
				}
				e.items = append(e.items, zoneItem{typ: "TIMEOUT"})
				continue
			}
			if it.Kind != yaml.MappingNode || len(it.Content) != 2 {
				return fmt.Errorf("spfsuite: %s: bad item at line %d", e.owner, it.Line)
			}
			zi := zoneItem{typ: it.Content[0].Value}
			v := it.Content[1]
			zi.strings = nodeStrings(v)
			if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
				zi.strings = nil
			}
			if v.Kind == yaml.ScalarNode && v.Value == "NONE" {
				zi.none = true
			}
			e.items = append(e.items, zi)
		}
		sc.zone = append(sc.zone, e)
	}
	return nil
}

// Serve loads the scenario's zone into srv: SPF entries are served as TXT
// unless the name has TXT entries of its own, TIMEOUT makes the name time
// out for every type not listed (with a value) before it, and names not
// listed are NXDOMAIN (see ../shared/conformance/README.md).
func (sc *Scenario) Serve(srv *dnstest.Server) error {
	for _, e := range sc.zone {
		owner := dns.Fqdn(e.owner)
		hasTXT := false
		for _, it := range e.items {
			if it.typ == "TXT" {
				hasTXT = true
			}
		}
		var answered []uint16
		timeout := false
		for _, it := range e.items {
			if it.typ == "TIMEOUT" {
				timeout = true
				break
			}
			if it.none {
				continue
			}
			switch it.typ {
			case "TXT":
				answered = append(answered, dns.TypeTXT)
			case "SPF":
				answered = append(answered, dns.TypeSPF)
				if !hasTXT {
					answered = append(answered, dns.TypeTXT)
				}
			default:
				answered = append(answered, dns.StringToType[it.typ])
			}
		}
		for _, it := range e.items {
			if it.typ == "TIMEOUT" || it.none {
				continue
			}
			rrs, err := records(owner, it, hasTXT)
			if err != nil {
				return fmt.Errorf("spfsuite: %s: %w", e.owner, err)
			}
			srv.Add(rrs...)
		}
		if timeout {
			srv.Timeout(owner, answered...)
		}
	}
	return nil
}

func records(owner string, it zoneItem, hasTXT bool) ([]dns.RR, error) {
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: 300}
	}
	switch it.typ {
	case "TXT", "SPF":
		var txt []string
		for _, s := range it.strings {
			txt = append(txt, dnstest.TXTStrings(s)...)
		}
		if it.typ == "SPF" {
			out := []dns.RR{&dns.SPF{Hdr: hdr(dns.TypeSPF), Txt: txt}}
			if !hasTXT {
				out = append(out, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: txt})
			}
			return out, nil
		}
		return []dns.RR{&dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: txt}}, nil
	case "A":
		ip := net.ParseIP(it.strings[0]).To4()
		if ip == nil {
			return nil, fmt.Errorf("bad A %q", it.strings[0])
		}
		return []dns.RR{&dns.A{Hdr: hdr(dns.TypeA), A: ip}}, nil
	case "AAAA":
		ip := net.ParseIP(it.strings[0])
		if ip == nil {
			return nil, fmt.Errorf("bad AAAA %q", it.strings[0])
		}
		return []dns.RR{&dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip}}, nil
	case "MX":
		if len(it.strings) != 2 {
			return nil, fmt.Errorf("bad MX %q", it.strings)
		}
		var pref uint16
		fmt.Sscan(it.strings[0], &pref) //nolint:errcheck
		return []dns.RR{&dns.MX{Hdr: hdr(dns.TypeMX), Preference: pref, Mx: dns.Fqdn(it.strings[1])}}, nil
	case "PTR":
		return []dns.RR{&dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: dns.Fqdn(it.strings[0])}}, nil
	case "CNAME":
		return []dns.RR{&dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(it.strings[0])}}, nil
	}
	return nil, fmt.Errorf("unknown record type %q", it.typ)
}

// Outcome is the result of running one test.
type Outcome struct {
	Test        Test
	Result      string
	Explanation string
	Error       string
}

// Match reports whether the result is one the suite accepts.
func (o Outcome) Match() bool {
	for _, r := range o.Test.Results {
		if r == o.Result {
			return true
		}
	}
	return false
}

// ExplanationChecked reports whether the suite gives an explanation to
// compare with, and ExplanationMatch whether it matched.
func (o Outcome) ExplanationChecked() bool { return o.Test.Explanation != "" && o.Result == "fail" }

// ExplanationMatch compares the explanation.
func (o Outcome) ExplanationMatch() bool { return o.Explanation == o.Test.Explanation }

// Report summarises outcomes: the counts and one line per miss, sorted.
func Report(outs []Outcome) (matched, expChecked, expMatched int, misses []string) {
	for _, o := range outs {
		if o.Match() {
			matched++
		} else {
			misses = append(misses, fmt.Sprintf("%s (spec %s): got %s, want %s; error %q",
				o.Test.Name, o.Test.Spec, o.Result, strings.Join(o.Test.Results, " or "), o.Error))
		}
		if o.ExplanationChecked() {
			expChecked++
			if o.ExplanationMatch() {
				expMatched++
			} else {
				misses = append(misses, fmt.Sprintf("%s (spec %s): explanation %q, want %q",
					o.Test.Name, o.Test.Spec, o.Explanation, o.Test.Explanation))
			}
		}
	}
	sort.Strings(misses)
	return
}
