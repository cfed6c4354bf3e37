package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver"
)

// The Grafana dashboard in dist/grafana uses exactly the metrics wehr
// exports: every name in its queries exists, and every wehr_ metric has
// a panel.
func TestDashboardNames(t *testing.T) {
	res, err := resolver.New(resolver.Config{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	m := New(res)
	// Vectors export nothing until a label set is used.
	m.Message("accept", time.Millisecond)
	m.Decision("mx", "DUNNO", "none", time.Millisecond)
	m.StoreError("policyd")
	m.ReportRows("written", 1)
	m.AuthPolicy("allow", "allow", time.Millisecond)
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		exported[f.GetName()] = true
	}
	b, err := os.ReadFile("../dist/grafana/wehr.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if s, ok := v.Query.(string); ok {
			exprs = append(exprs, s)
		}
	}
	name := regexp.MustCompile(`\b(wehr|process|go)_[a-z_]+`)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			for _, suf := range []string{"_bucket", "_count", "_sum"} {
				if base := strings.TrimSuffix(n, suf); base != n && exported[base] {
					n = base
				}
			}
			used[n] = true
			if !exported[n] {
				t.Errorf("the dashboard queries %s, which wehr does not export", n)
			}
		}
	}
	var missing []string
	for n := range exported {
		if strings.HasPrefix(n, "wehr_") && !used[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no panel shows %v", missing)
	}
}
