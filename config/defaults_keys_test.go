package config

import (
	"sort"
	"testing"

	"gopkg.in/yaml.v3"
)

// keyPaths lists the dotted key paths of the mappings in n.
func keyPaths(n *yaml.Node, prefix string, out map[string]bool) {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		keyPaths(n.Content[0], prefix, out)
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := prefix + n.Content[i].Value
		out[k] = true
		keyPaths(n.Content[i+1], k+".", out)
	}
}

// Every setting has its line, with its comment, in wehr config
// defaults: a key the file leaves out is one the admin never learns of.
func TestDefaultsTextNamesEveryKey(t *testing.T) {
	var doc, def yaml.Node
	if err := yaml.Unmarshal([]byte(DefaultsText()), &doc); err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &def); err != nil {
		t.Fatal(err)
	}
	have, want := map[string]bool{}, map[string]bool{}
	keyPaths(&doc, "", have)
	keyPaths(&def, "", want)
	var missing []string
	for k := range want {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("wehr config defaults leaves out %v", missing)
	}
}
