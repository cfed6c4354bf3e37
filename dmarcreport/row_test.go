package dmarcreport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/spf"
	"github.com/wehr/wehr/store"
)

// verdict is a verdict for one author of bank.example with the given
// DMARC result.
func verdict(res mailauth.DMARCStatus, policy, disposition string, rua []string, overrides ...string) *mailauth.Verdict {
	rec := &mailauth.DMARCRecord{Policy: policy, ADKIM: 'r', ASPF: 's', RUA: rua}
	d := mailauth.DMARCResult{Result: res, FromDomain: "bank.example", PolicyDomain: "bank.example", Policy: policy,
		Discovery: mailauth.DiscoveryTreeWalk, Disposition: disposition, Overrides: overrides, Record: rec,
		DKIMAligned: res == mailauth.DMARCPass}
	if len(overrides) > 0 {
		d.Reason = "a list that vouches"
	}
	return &mailauth.Verdict{
		SPF:      spf.Outcome{Result: spf.Pass, Domain: "Evil.Example"},
		DKIM:     []mailauth.DKIMResult{{Result: mailauth.DKIMPass, Domain: "bank.example", Selector: "s1"}, {Result: mailauth.DKIMNone}},
		DMARC:    d,
		AllDMARC: []mailauth.DMARCResult{d},
	}
}

var env = mailauth.Envelope{ClientIP: net.ParseIP("::ffff:203.0.113.5"), Helo: "mail.evil.example", MailFrom: "x@Evil.Example",
	RcptTo: []string{"<alice@Example.Test>", "bob@other.test"}}

func TestRows(t *testing.T) {
	rua := []string{"mailto:d@bank.example"}
	tests := []struct {
		name        string
		v           *mailauth.Verdict
		env         mailauth.Envelope
		rows        int
		disposition string
		reasons     string
	}{
		{"pass, enforcing policy", verdict(mailauth.DMARCPass, "reject", "none", rua), env, 1, "pass", ""},
		{"pass, p=none", verdict(mailauth.DMARCPass, "none", "none", rua), env, 1, "none", ""},
		{"fail, refused", verdict(mailauth.DMARCFail, "reject", "reject", rua), env, 1, "reject", ""},
		{"fail, list override", verdict(mailauth.DMARCFail, "reject", "quarantine", rua, "mailing_list"), env, 1, "quarantine", "mailing_list: a list that vouches"},
		{"no rua: no report", verdict(mailauth.DMARCFail, "reject", "reject", nil), env, 0, "", ""},
		{"temperror: no row", verdict(mailauth.DMARCTempError, "reject", "none", rua), env, 0, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows := Rows(tc.v, tc.env)
			if len(rows) != tc.rows {
				t.Fatalf("%d rows, want %d", len(rows), tc.rows)
			}
			if tc.rows == 0 {
				return
			}
			r := rows[0]
			var reasons []string
			for _, x := range r.Reasons {
				reasons = append(reasons, x.Type+": "+x.Comment)
			}
			if r.Disposition != tc.disposition || strings.Join(reasons, ",") != tc.reasons {
				t.Fatalf("disposition %s reasons %v", r.Disposition, reasons)
			}
			if r.SourceIP != "203.0.113.5" || r.HeaderFrom != "bank.example" || r.EnvelopeFrom != "evil.example" || r.EnvelopeTo != "example.test" {
				t.Fatalf("identifiers %+v", r)
			}
			if r.Policy != (Published{Domain: "bank.example", P: r.Policy.P, ADKIM: "r", ASPF: "s", Discovery: "treewalk", Testing: "n"}) {
				t.Fatalf("policy %+v", r.Policy)
			}
			if len(r.DKIMResults) != 1 || r.DKIMResults[0] != (DKIMAuth{"bank.example", "s1", "pass"}) ||
				r.SPFResult != (SPFAuth{"evil.example", "mfrom", "pass"}) {
				t.Fatalf("auth results %+v %+v", r.DKIMResults, r.SPFResult)
			}
		})
	}
	// The null sender has no envelope_from; identical messages have one
	// key, another client another.
	null := env
	null.MailFrom = ""
	if r := Rows(verdict(mailauth.DMARCFail, "reject", "reject", rua), null)[0]; r.EnvelopeFrom != "" {
		t.Fatalf("null sender: envelope_from %q", r.EnvelopeFrom)
	}
	a := Rows(verdict(mailauth.DMARCFail, "reject", "reject", rua), env)[0].Key()
	b := Rows(verdict(mailauth.DMARCFail, "reject", "reject", rua), env)[0].Key()
	other := env
	other.ClientIP = net.ParseIP("203.0.113.6")
	c := Rows(verdict(mailauth.DMARCFail, "reject", "reject", rua), other)[0].Key()
	if a != b || a == c {
		t.Fatalf("keys %s %s %s", a, b, c)
	}
}

// flaky fails its first n writes, like Redis during a failover.
type flaky struct {
	store.Store
	fail atomic.Int64
}

func (f *flaky) Counters(ctx context.Context, key string, add []int64, ttl time.Duration) ([]int64, error) {
	if f.fail.Add(-1) >= 0 {
		return nil, fmt.Errorf("%w: test", store.ErrUnavailable)
	}
	return f.Store.Counters(ctx, key, add, ttl)
}

func open(t testing.TB) store.Store {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// A row the store cannot take is kept and retried, never lost; the
// decision path never waits.
func TestRecorderRetries(t *testing.T) {
	st := &flaky{Store: open(t)}
	st.fail.Store(3)
	var log bytes.Buffer
	r := NewRecorder(st, 10, slog.New(slog.NewTextHandler(&log, nil)), nil)
	r.interval = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	for range 3 { // identical rows: one count of 3
		r.Record(verdict(mailauth.DMARCFail, "reject", "reject", []string{"mailto:d@bank.example"}), env)
	}
	for i := 0; r.Written() < 3; i++ {
		if i > 300 {
			t.Fatalf("not written after retries:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	rows, err := store.NewReportRows(st).Rows(context.Background(), "bank.example", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil || len(rows) != 1 || rows[0].Count != 3 {
		t.Fatalf("rows %+v %v", rows, err)
	}
	if !strings.Contains(log.String(), "report rows kept and retried") {
		t.Errorf("no log line for the retries:\n%s", log.String())
	}
}

// Past the limit of distinct rows waiting, rows are dropped, counted and
// logged; identical rows only add to their count. Record never blocks.
func TestRecorderLimit(t *testing.T) {
	var log bytes.Buffer
	r := NewRecorder(store.Down{Err: errors.New("test")}, 2, slog.New(slog.NewTextHandler(&log, nil)), nil)
	for i := range 5 {
		e := env
		e.ClientIP = net.ParseIP(fmt.Sprintf("203.0.113.%d", 10+i%3)) // three distinct rows
		r.Record(verdict(mailauth.DMARCFail, "reject", "reject", []string{"mailto:d@bank.example"}), e)
	}
	if r.Pending() != 2 || r.Dropped() != 1 || r.waiting() != 4 {
		t.Fatalf("pending %d dropped %d waiting %d", r.Pending(), r.Dropped(), r.waiting())
	}
	if !strings.Contains(log.String(), "rows dropped") || !strings.Contains(log.String(), "dropped_total=1") {
		t.Fatalf("log:\n%s", log.String())
	}
	// Stopping with the store still down: the rows left are logged.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r.Run(ctx)
	if !strings.Contains(log.String(), "report rows lost at shutdown") || !strings.Contains(log.String(), "rows=4") {
		t.Fatalf("no line for the rows lost at shutdown:\n%s", log.String())
	}
}
