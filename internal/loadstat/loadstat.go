// Package loadstat summarizes what wehr's load generators (wehr bench
// milter, wehr bench policyd) measured: latency percentiles and counts of
// the answers.
package loadstat

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Latency summarizes the latencies of a run.
type Latency struct {
	P50, P99, Max time.Duration
}

// Summarize sorts d and returns its median, 99th percentile and maximum;
// the zero Latency when d is empty.
func Summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	return Latency{P50: d[len(d)/2], P99: d[min(len(d)-1, len(d)*99/100)], Max: d[len(d)-1]}
}

// String is "latency p50 X p99 Y max Z", to the microsecond.
func (l Latency) String() string {
	return fmt.Sprintf("latency p50 %v p99 %v max %v", l.P50.Round(time.Microsecond), l.P99.Round(time.Microsecond), l.Max.Round(time.Microsecond))
}

// Counts writes counts as "name=n" words in name order.
func Counts(m map[string]int) string {
	var out []string
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, n))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}
