package config

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestREADMEKeys: every configuration key the README names in backticks
// (`policyd.submission.bulk.filter`) exists, spelled as the README spells
// it: an admin copies them into wehr.yaml.
func TestREADMEKeys(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if err := yaml.Unmarshal([]byte(DefaultsText()), &tree); err != nil {
		t.Fatal(err)
	}
	// Names that are files or domains, not keys.
	notKey := regexp.MustCompile(`\.(json|yaml|pem|eml|db|sock|service|cf|conf|yml|csv|png|txt|org|net|com|example|test)$`)
	seen := 0
	for _, m := range regexp.MustCompile("`([a-z_0-9]+(?:\\.[a-z_0-9]+)+)`").FindAllStringSubmatch(string(readme), -1) {
		key := m[1]
		if notKey.MatchString(key) {
			continue
		}
		seen++
		var node any = tree
		found := true
		for _, part := range strings.Split(key, ".") {
			mp, ok := node.(map[string]any)
			if !ok {
				found = false
				break
			}
			if node, ok = mp[part]; !ok {
				found = false
				break
			}
		}
		if !found {
			t.Errorf("README.md names `%s`, which is not a configuration key (wehr config defaults)", key)
		}
	}
	if seen < 20 {
		t.Fatalf("only %d keys found in README.md: the pattern is broken", seen)
	}
}
