package dmarcreport

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

func TestParseURI(t *testing.T) {
	for in, want := range map[string]string{
		"mailto:d@bank.example":           "d@bank.example 0",
		"MAILTO:d@bank.example!10m":       "d@bank.example 10485760",
		"mailto:d%40x@bank.example":       "error",
		"mailto:d@bank.example!x":         "error",
		"https://bank.example/dmarc":      "error",
		"mailto:a@x.example,b@y.example":  "error",
		"mailto:Name <d@bank.example>":    "error",
		"mailto:d@bank.example\r\nBcc: x": "error",
	} {
		d, err := ParseURI(in)
		got := fmt.Sprintf("%s %d", d.Address, d.MaxSize)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

// RFC 9990 "Verifying External Destinations": a forger who publishes a
// rua of a victim's address gets no report sent there.
func TestDestinations(t *testing.T) {
	srv := dnstest.New(t, `
bank.example._report._dmarc.reports.example.  300 IN TXT "v=DMARC1;"
bank.example._report._dmarc.any.example.      300 IN TXT "v=DMARC1"
bank.example._report._dmarc.moved.example.    300 IN TXT "v=DMARC1; rua=mailto:new@moved.example"
bank.example._report._dmarc.away.example.     300 IN TXT "v=DMARC1; rua=mailto:x@elsewhere.example"
bank.example._report._dmarc.junk.example.     300 IN TXT "not dmarc"
`)
	srv.ServFail("bank.example._report._dmarc.flaky.example")
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dests, skipped, err := Destinations(ctx, res, "bank.example", []string{
		"mailto:d@bank.example", "mailto:d@sub.bank.example", "mailto:r@reports.example", "mailto:r@any.example!1m",
		"mailto:old@moved.example", "mailto:r@away.example", "mailto:r@junk.example", "mailto:victim@victim.example",
		"mailto:d@bank.example", "ftp://x",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(dests)
	want := "[{d@bank.example 0} {d@sub.bank.example 0} {r@reports.example 0} {r@any.example 1048576} {new@moved.example 0}]"
	if got != want {
		t.Errorf("destinations %s\nwant         %s", got, want)
	}
	if len(skipped) != 4 {
		t.Errorf("skipped %+v", skipped)
	}
	// A temporary failure is an error: the report waits.
	if _, _, err := Destinations(ctx, res, "bank.example", []string{"mailto:r@flaky.example"}); err == nil {
		t.Error("SERVFAIL taken as an answer")
	}
}
