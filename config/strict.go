package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var durationType = reflect.TypeFor[time.Duration]()

// decodeStrict decodes data into v after checking every key and value
// against v's type, so that each problem names its key path and line. It
// returns the line of every key path seen.
func decodeStrict(data []byte, v any) (map[string]int, []Problem) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, []Problem{syntaxProblem(err, data)}
	}
	lines := map[string]int{}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return lines, nil // empty file: all defaults
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return lines, nil
	}
	var ps []Problem
	if !check(root, reflect.TypeOf(v).Elem(), "", lines, &ps) {
		return lines, ps
	}
	// check removed every key it found a problem with, so what is left
	// decodes, and the semantic checks can report the rest at once.
	if err := root.Decode(v); err != nil {
		return lines, append(ps, Problem{Msg: strings.TrimPrefix(err.Error(), "yaml: ")})
	}
	return lines, ps
}

// parserErrors are the YAML parser's (not scanner's) messages, which
// gopkg.in/yaml.v3 reports at the 0-based line of their context: one
// line too early ("c: [x" on line 3 is reported at line 2).
var parserErrors = []string{
	"did not find expected <document start>", "did not find expected node content", "did not find expected key",
	"did not find expected '-' indicator", "did not find expected ',' or ']'", "did not find expected ',' or '}'",
}

// syntaxProblem turns the YAML library's "yaml: line 7: ..." into a
// problem at the line where the mistake is, so that it reads FILE:LINE:
// like every other, with a hint where the library's words do not help.
func syntaxProblem(err error, data []byte) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
				if slices.Contains(parserErrors, msg) {
					line++
				}
			}
		}
	}
	switch msg {
	case "found unexpected end of stream":
		// An unclosed quote: the library reports the end of the file.
		if l := openQuote(data); l > 0 {
			return Problem{Line: l, Msg: "YAML syntax: a quote opened on this line is never closed"}
		}
	case "mapping values are not allowed in this context":
		msg += " (is a ':' missing after a key on the line before, or does a value with ': ' need quotes?)"
	}
	return Problem{Line: line, Msg: "YAML syntax: " + msg}
}

// openQuote returns the first line whose double or single quotes do not
// pair up (outside a comment), or 0.
func openQuote(data []byte) int {
	for i, l := range strings.Split(string(data), "\n") {
		var open byte
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case open == 0 && c == '#' && (j == 0 || l[j-1] == ' '):
				j = len(l)
			case open == 0 && (c == '"' || c == '\''):
				open = c
			case open == '"' && c == '\\':
				j++
			case c == open:
				open = 0
			}
		}
		if open != 0 {
			return i + 1
		}
	}
	return 0
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// check walks node n, which is to decode into type t at key path. It
// reports false if n itself is bad; bad keys and list items below n are
// reported and removed from n.
func check(n *yaml.Node, t reflect.Type, path string, lines map[string]int, ps *[]Problem) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		lines[path] = n.Line
	}
	bad := func(format string, args ...any) bool {
		*ps = append(*ps, Problem{Line: n.Line, Key: path, Msg: fmt.Sprintf(format, args...)})
		return false
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return true // key present without value: keeps the default
	}
	switch {
	case reflect.PointerTo(t).Implements(textUnmarshaler):
		// A value type of its own (setting.Network): its words.
		if n.Kind != yaml.ScalarNode {
			return bad("want a single value, got %s", kindName(n))
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			return bad("%v", err)
		}
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			return bad("want a duration such as 30s or 5m")
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			return bad("%q is not a duration; write it with a unit, such as 30s, 5m or 2h", n.Value)
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping of keys, got %s", kindName(n))
		}
		fields := map[string]reflect.StructField{}
		structFields(t, fields)
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				*ps = append(*ps, Problem{Line: k.Line, Key: join(path, k.Value), Msg: "unknown key" + suggest(k.Value, fields)})
				continue
			}
			lines[join(path, k.Value)] = k.Line
			if check(val, f.Type, join(path, k.Value), lines, ps) {
				keep = append(keep, k, val)
			}
		}
		n.Content = keep
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("want a list, got %s", kindName(n))
		}
		var keep []*yaml.Node
		for i, c := range n.Content {
			if check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines, ps) {
				keep = append(keep, c)
			}
		}
		n.Content = keep
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("want a mapping, got %s", kindName(n))
		}
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if check(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), lines, ps) {
				keep = append(keep, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = keep
	default:
		if n.Kind != yaml.ScalarNode {
			return bad("want a single value, got %s", kindName(n))
		}
		p := reflect.New(t)
		if err := n.Decode(p.Interface()); err != nil {
			return bad("%q is not %s", n.Value, typeName(t))
		}
	}
	return true
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// structFields maps the YAML keys of struct type t to its fields, those
// of ",inline" structs included.
func structFields(t reflect.Type, fields map[string]reflect.StructField) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" && f.Type.Kind() == reflect.Struct {
			structFields(f.Type, fields)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a valid value here"
}

// suggest names the known key closest to an unknown one (a typo, two
// letters swapped, or a different separator), if one is close enough.
func suggest(k string, fields map[string]reflect.StructField) string {
	norm := func(s string) string { return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(s)) }
	limit := 1
	if len(k) >= 6 {
		limit = 2
	}
	best, bestD := "", limit+1
	for name := range fields {
		d := editDistance(strings.ToLower(k), name)
		if norm(name) == norm(k) {
			d = 0
		}
		if d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours cost 1 each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
