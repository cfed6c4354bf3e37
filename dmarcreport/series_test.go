package dmarcreport

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"
)

func stored(org string, begin time.Time, hours int, messages, fail int64) Stored {
	return Stored{Report: &Report{OrgName: org, DateRange: DateRange{Begin: begin.Unix(), End: begin.Add(time.Duration(hours)*time.Hour - time.Second).Unix()},
		MessageCount: messages, FailCount: fail}}
}

// daily is the series of reps as the tallies make it: each report on
// its day (adder.report), the days filled in (fillDays).
func daily(reps []Stored) []Day {
	byDate := map[string]*adder{}
	var dates []string
	for _, s := range reps {
		date, ok := dateOf(s.Report)
		if !ok {
			continue
		}
		if byDate[date] == nil {
			byDate[date] = newAdder("")
			dates = append(dates, date)
		}
		byDate[date].report(s.ID, s.Report)
	}
	slices.Sort(dates)
	days := make([]Day, 0, len(dates))
	for _, d := range dates {
		days = append(days, byDate[d].result(d).Day)
	}
	return fillDays(days)
}

// The daily series: reports on the day they mostly cover, per org,
// empty days filled in, a reporter's impossible fail count bounded by
// its message count.
func TestDaily(t *testing.T) {
	d1 := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	reps := []Stored{
		stored("Google", d1, 24, 100, 10),
		stored("Yahoo", d1, 24, 50, 0),
		stored("Google", d1.Add(2*24*time.Hour-2*time.Hour), 24, 30, 3), // 22:00 to 22:00: the 30th
		stored("Liar", d1.Add(2*24*time.Hour), 24, 5, 500),
	}
	days := daily(reps)
	if len(days) != 3 {
		t.Fatalf("%d days: %+v", len(days), days)
	}
	if d := days[0]; d.Date != "2026-11-28" || d.Reports != 2 || d.Messages != 150 || d.Pass != 140 || d.Fail != 10 || len(d.Orgs) != 2 || d.Orgs[0].Org != "Google" || d.Orgs[0].Fail != 10 {
		t.Errorf("day 1: %+v", d)
	}
	if d := days[1]; d.Date != "2026-11-29" || d.Reports != 0 || d.Messages != 0 || len(d.Orgs) != 0 {
		t.Errorf("the empty day: %+v", d)
	}
	if d := days[2]; d.Date != "2026-11-30" || d.Reports != 2 || d.Messages != 35 || d.Fail != 8 || d.Pass != 27 {
		t.Errorf("day 3 (the liar's 500 failures of 5 messages count as 5): %+v", d)
	}
	// Over MaxDays: the latest MaxDays.
	long := daily([]Stored{stored("A", d1.AddDate(-2, 0, 0), 24, 1, 0), stored("A", d1, 24, 1, 0)})
	if len(long) != MaxDays || long[len(long)-1].Date != "2026-11-28" || long[0].Reports != 0 {
		t.Errorf("a two-year span: %d days, last %+v", len(long), long[len(long)-1])
	}
	if len(daily(nil)) != 0 {
		t.Error("no reports, some days")
	}
}

// The alignment breakdown adds up the records' messages.
func TestAlignment(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	if _, err := Ingest(ctx, st, bytes.NewReader(report(t, "Google", "a1", 9)), Limits{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	sum, err := Summarize(ctx, st, nil, "bank.example", time.Time{})
	a := sum.Alignment
	// genReport: record i has 1+i%2 messages, DKIM fails on every third,
	// SPF always fails: i = 0, 3, 6 fail (1+2+1), the rest DKIM only.
	if err != nil || a.Neither != 4 || a.DKIMOnly != 9 || a.Both != 0 || a.SPFOnly != 0 {
		t.Errorf("%+v %v", a, err)
	}
}
