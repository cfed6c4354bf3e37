package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver"
)

func TestExport(t *testing.T) {
	res, err := resolver.New(resolver.Config{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	m := New(res)
	m.Message("quarantine", 3*time.Millisecond)
	m.Message("quarantine", 5*time.Millisecond)
	m.Decision("mx", "450 4.7.1 Greylisted: please retry in 300 seconds", "greylist", time.Millisecond)
	m.Decision("", "DUNNO", "", time.Millisecond)
	m.StoreError("policyd")
	var nilM *Metrics
	nilM.Message("accept", time.Second) // a nil Metrics is a no-op

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`wehr_milter_messages_total{action="quarantine"} 2`,
		`wehr_milter_message_seconds_count 2`,
		`wehr_policyd_decisions_total{action="450",check="greylist",context="mx"} 1`,
		`wehr_policyd_decisions_total{action="DUNNO",check="",context="none"} 1`,
		`wehr_store_errors_total{user="policyd"} 1`,
		`wehr_dns_cache_entries 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("missing %q", want)
		}
	}
}
