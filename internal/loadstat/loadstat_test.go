package loadstat

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 200; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		in   []time.Duration
		want Latency
	}{
		{nil, Latency{}},
		{[]time.Duration{3 * time.Millisecond}, Latency{3 * time.Millisecond, 3 * time.Millisecond, 3 * time.Millisecond}},
		{d, Latency{101 * time.Millisecond, 199 * time.Millisecond, 200 * time.Millisecond}},
	}
	for _, tc := range tests {
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("Summarize(%d values) = %+v, want %+v", len(tc.in), got, tc.want)
		}
	}
	if s := (Latency{time.Millisecond, 2 * time.Millisecond, 3*time.Millisecond + 1}).String(); s != "latency p50 1ms p99 2ms max 3ms" {
		t.Errorf("String() = %q", s)
	}
	if s := Counts(map[string]int{"reject": 2, "accept": 5}); s != "accept=5 reject=2" {
		t.Errorf("Counts = %q", s)
	}
}
