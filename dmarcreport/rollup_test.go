package dmarcreport

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

// dayReport is org's report of one day about bank.example: 10 messages
// from its own server passing, fail from a forger (with a DKIM
// signature of his own domain, selector "forged").
func dayReport(org, id string, day time.Time, fail int) string {
	forger := ""
	if fail > 0 {
		forger = fmt.Sprintf(`<record><row><source_ip>198.51.100.7</source_ip><count>%d</count><policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row><identifiers><header_from>bank.example</header_from></identifiers><auth_results><dkim><domain>evil.example</domain><selector>forged</selector><result>pass</result></dkim><spf><domain>evil.example</domain><result>fail</result></spf></auth_results></record>`, fail)
	}
	return fmt.Sprintf(`<?xml version="1.0"?><feedback><report_metadata><org_name>%s</org_name><email>r@x.example</email><report_id>%s</report_id>`+
		`<date_range><begin>%d</begin><end>%d</end></date_range></report_metadata><policy_published><domain>bank.example</domain><p>reject</p></policy_published>`+
		`<record><row><source_ip>192.0.2.1</source_ip><count>10</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>bank.example</header_from></identifiers><auth_results><dkim><domain>Bank.Example.</domain><selector>s2026</selector><result>pass</result></dkim><spf><domain>bank.example</domain><result>pass</result></spf></auth_results></record>`+
		`%s</feedback>`, org, id, day.Unix(), day.Add(24*time.Hour-time.Second).Unix(), forger)
}

// The day tallies are a cache of the reports: whatever became of them
// between an ingest and a read (a lost update, garbage, a tally of
// another day under a day's key, all gone, a report expired), the
// summary is what the reports say, and the tallies stored after the
// read say it too.
func TestTallies(t *testing.T) {
	ctx := context.Background()
	d1 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	d2 := d1.AddDate(0, 0, 1)
	ingest := func(t *testing.T, st store.Store, org, id string, day time.Time, fail int) Ingested {
		t.Helper()
		in, err := Ingest(ctx, st, strings.NewReader(dayReport(org, id, day, fail)), Limits{}, d2)
		if err != nil || in.TallyErr != nil {
			t.Fatalf("%v %v", err, in.TallyErr)
		}
		return in
	}
	type world struct {
		st    store.Store
		rr    store.ReceivedReports
		first []byte // day 1's tally after the first report
		yahoo Ingested
	}
	cases := []struct {
		name           string
		then           func(t *testing.T, w *world)
		reports        int
		messages, fail int64
	}{
		{"as ingested", func(*testing.T, *world) {}, 3, 37, 7},
		{"a lost update", func(t *testing.T, w *world) {
			if err := w.rr.PutDay(ctx, "bank.example", "2026-11-20", w.first); err != nil {
				t.Fatal(err)
			}
		}, 3, 37, 7},
		{"garbage", func(t *testing.T, w *world) {
			w.rr.PutDay(ctx, "bank.example", "2026-11-20", []byte(`{"date":`))
		}, 3, 37, 7},
		{"another day's tally", func(t *testing.T, w *world) {
			b, _, _ := w.rr.Day(ctx, "bank.example", "2026-11-21")
			w.rr.PutDay(ctx, "bank.example", "2026-11-20", b)
		}, 3, 37, 7},
		{"all gone", func(t *testing.T, w *world) {
			w.rr.PutDay(ctx, "bank.example", "2026-11-20", nil)
			w.rr.PutDay(ctx, "bank.example", "2026-11-21", nil)
		}, 3, 37, 7},
		// A report expires 400 days after it came, past what a page
		// shows: a full check finds it gone (there is one when tallies
		// go missing, and when none was noted).
		{"a report expired, and a full check", func(t *testing.T, w *world) {
			w.st.Delete(ctx, "rinm:bank.example:"+w.yahoo.ID)
			w.st.Delete(ctx, "rinv:bank.example")
		}, 2, 27, 7},
	}
	// On both stores: a Redis one holds the tallies in one server, the
	// keys flushed between cases.
	r := storetest.StartRedis(t, "")
	redis, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer redis.Close()
	stores := []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"embedded", func(t *testing.T) store.Store { return open(t) }},
		{"redis", func(t *testing.T) store.Store {
			keys, _ := redis.Scan(ctx, "", 0)
			for _, k := range keys {
				redis.Delete(ctx, k)
			}
			return redis
		}},
	}
	var want []byte
	for _, sto := range stores {
		for _, tc := range cases {
			t.Run(sto.name+"/"+tc.name, func(t *testing.T) {
				w := &world{st: sto.open(t)}
				w.rr = store.NewReceivedReports(w.st, ReceivedKeep)
				ingest(t, w.st, "Google", "g1", d1, 2)
				w.first, _, _ = w.rr.Day(ctx, "bank.example", "2026-11-20")
				w.yahoo = ingest(t, w.st, "Yahoo", "y1", d1, 0)
				ingest(t, w.st, "Google", "g2", d2, 5)
				tc.then(t, w)
				for round := range 2 { // the read, then what it stored
					sum, lines, err := Overview(ctx, w.st, nil, "bank.example", time.Time{}, 10)
					if err != nil {
						t.Fatal(err)
					}
					if sum.Reports != tc.reports || sum.Messages != tc.messages || sum.Fail != tc.fail || len(lines) != tc.reports {
						t.Fatalf("round %d: %d reports, %d messages, %d failed, %d lines", round, sum.Reports, sum.Messages, sum.Fail, len(lines))
					}
					if len(sum.Days) != 2 || sum.Days[0].Reports+sum.Days[1].Reports != tc.reports || sum.Days[1].Fail != 5 {
						t.Errorf("round %d: days %+v", round, sum.Days)
					}
					if s := sum.Sources[0]; s.IP != "198.51.100.7" || s.Fail != 7 || len(s.Orgs) != 1 ||
						fmt.Sprint(s.DKIM) != "[evil.example s=forged pass]" || fmt.Sprint(s.SPF) != "[evil.example fail]" {
						t.Errorf("round %d: first source %+v", round, s)
					}
					// The forger's selector is not the domain's.
					if !reflect.DeepEqual(sum.Selectors, []string{"s2026"}) || sum.Alignment.Neither != 7 || sum.Alignment.Both != tc.messages-7 {
						t.Errorf("round %d: selectors %v, alignment %+v", round, sum.Selectors, sum.Alignment)
					}
					if lines[0].ReportID != "g2" || lines[0].Fail != 5 {
						t.Errorf("round %d: newest line %+v", round, lines[0])
					}
					if tc.reports == 3 {
						b, _ := json.Marshal(sum)
						if want == nil {
							want = b
						} else if string(b) != string(want) {
							t.Errorf("round %d: the summary differs from the one as ingested:\n%s\n%s", round, b, want)
						}
					}
				}
			})
		}
	}
}

// A reporter's counts near the int64 limit saturate, in a tally and
// across tallies, and never wrap to a negative figure (or a pass).
func TestTalliesSaturate(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	d1 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for i, day := range []time.Time{d1, d1, d1.AddDate(0, 0, 1)} {
		x := strings.Replace(dayReport("Liar", fmt.Sprint(i), day, 1), "<count>1</count>", "<count>9223372036854775000</count>", 1)
		if _, err := Ingest(ctx, st, strings.NewReader(x), Limits{}, d1); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := Summarize(ctx, st, nil, "bank.example", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	const maxInt = 1<<63 - 1
	if sum.Fail != maxInt || sum.Messages != maxInt || sum.Pass != 30 || sum.Sources[0].Fail != maxInt || sum.Alignment.Neither != maxInt {
		t.Errorf("%+v", sum)
	}
}

// A report naming more addresses than a tally keeps (a forger's
// botnet): the totals stay exact, the sources that failed most are the
// ones kept.
func TestTallyBoundsSources(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	var b strings.Builder
	n := 3 * maxDaySources
	fmt.Fprintf(&b, `<?xml version="1.0"?><feedback><report_metadata><org_name>Big</org_name><email>r@x.example</email><report_id>b</report_id><date_range><begin>1764460800</begin><end>1764547199</end></date_range></report_metadata><policy_published><domain>bank.example</domain><p>reject</p></policy_published>`)
	for i := range n {
		// Address i fails i%7 messages (and passes one).
		fmt.Fprintf(&b, `<record><row><source_ip>10.0.%d.%d</source_ip><count>1</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>bank.example</header_from></identifiers><auth_results><spf><domain>bank.example</domain><result>pass</result></spf></auth_results></record>`, i>>8, i&255)
		if i%7 > 0 {
			fmt.Fprintf(&b, `<record><row><source_ip>10.0.%d.%d</source_ip><count>%d</count><policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row><identifiers><header_from>bank.example</header_from></identifiers><auth_results><spf><domain>x.example</domain><result>fail</result></spf></auth_results></record>`, i>>8, i&255, i%7)
		}
	}
	b.WriteString(`</feedback>`)
	if _, err := Ingest(ctx, st, strings.NewReader(b.String()), Limits{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	bt, _, _ := store.NewReceivedReports(st, ReceivedKeep).Day(ctx, "bank.example", "2025-11-30")
	var tl tally
	if err := json.Unmarshal(bt, &tl); err != nil {
		t.Fatal(err)
	}
	var fail int64
	for i := range n {
		fail += int64(i % 7)
	}
	if len(tl.Sources) != maxDaySources || tl.Messages != int64(n)+fail || tl.Fail != fail {
		t.Fatalf("%d sources, %d messages, %d failed", len(tl.Sources), tl.Messages, tl.Fail)
	}
	// The true first 2,000 are every address failing 6 or 5 times and
	// some failing 4 times.
	worst := 0
	for _, s := range tl.Sources {
		if s.Fail < 4 {
			t.Fatalf("kept %+v", s)
		}
		if s.Fail == 6 {
			worst++
		}
	}
	if worst != n/7 {
		t.Errorf("kept %d of the %d addresses failing most", worst, n/7)
	}
}

// What a reporter writes into a source's DKIM and SPF detail is bounded
// in length and in number, on a rune boundary.
func TestSourceDetailBounded(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	long := strings.Repeat("ü", 100) + ".example"
	var auth strings.Builder
	for i := range 20 {
		fmt.Fprintf(&auth, `<dkim><domain>d%d.%s</domain><selector>s</selector><result>pass</result></dkim>`, i, long)
	}
	x := strings.Replace(dayReport("Google", "g", time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC), 1),
		`<auth_results><dkim><domain>evil.example</domain>`, `<auth_results>`+auth.String()+`<dkim><domain>evil.example</domain>`, 1)
	if _, err := Ingest(ctx, st, strings.NewReader(x), Limits{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	sum, err := Summarize(ctx, st, nil, "bank.example", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	d := sum.Sources[0].DKIM
	if len(d) != 5 || !strings.HasPrefix(d[0], "d0.üü") || len(d[0]) > 64+len(" s=s pass")+len("…") || !utf8.ValidString(d[0]) {
		t.Errorf("%d: %q", len(d), d)
	}
}

// scans counts the key scans of received reports' metadata.
type scans struct {
	store.Store
	n int
}

func (s *scans) Scan(ctx context.Context, prefix string, limit int) ([]string, error) {
	if strings.HasPrefix(prefix, "rinm:") {
		s.n++
	}
	return s.Store.Scan(ctx, prefix, limit)
}

// Once checked, the tallies are read without listing the reports: a
// report stored since is looked for in its day's tally (a lost update
// is found that way); a tally that no longer reads, or one gone, makes
// a full check.
func TestTalliesGeneration(t *testing.T) {
	ctx := context.Background()
	st := &scans{Store: open(t)}
	rr := store.NewReceivedReports(st, ReceivedKeep)
	d1 := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	ingest := func(org, id string, fail int) {
		t.Helper()
		if _, err := Ingest(ctx, st, strings.NewReader(dayReport(org, id, d1, fail)), Limits{}, d1); err != nil {
			t.Fatal(err)
		}
	}
	read := func(wantReports int, wantScans int) {
		t.Helper()
		st.n = 0
		sum, err := Summarize(ctx, st, nil, "bank.example", time.Time{})
		if err != nil || sum.Reports != wantReports || st.n != wantScans {
			t.Fatalf("%d reports (want %d), %d scans (want %d), %v", sum.Reports, wantReports, st.n, wantScans, err)
		}
	}
	ingest("Google", "g1", 1) // the domain's first: checked at once
	read(1, 0)
	read(1, 0)
	before, _, _ := rr.Day(ctx, "bank.example", "2026-11-20")
	ingest("Yahoo", "y1", 0)
	rr.PutDay(ctx, "bank.example", "2026-11-20", before) // the new report's tally update lost
	read(2, 0)                                           // found by its generation
	read(2, 0)
	rr.PutDay(ctx, "bank.example", "2026-11-20", []byte("{garbage")) // a tally that no longer reads
	read(2, 1)
	read(2, 0)
	rr.PutDay(ctx, "bank.example", "2026-11-20", nil) // a tally gone (evicted)
	read(2, 1)
	ingest("Mailru", "m1", 0)
	st.Delete(ctx, "rinl:bank.example") // the note of the latest reports lost (two ingests raced)
	read(3, 1)
	read(3, 0)
}
