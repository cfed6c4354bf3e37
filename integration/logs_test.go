package integration

import (
	"strings"
	"testing"
	"time"
)

// logMark is where wehr's log ends now: what a test looks for must come
// after it, so that an earlier test's line cannot answer for it.
func logMark() int { return len(readFile(w.wehr.Log)) }

// waitLog waits until a line of wehr's log after mark holds every part,
// and returns it.
func waitLog(t *testing.T, mark int, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := readFile(w.wehr.Log)
		if mark <= len(log) {
			for _, l := range strings.Split(log[mark:], "\n") {
				all := true
				for _, p := range parts {
					all = all && strings.Contains(l, p)
				}
				if all {
					return l
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("wehr logged no line with %q; its log since the test began:\n%s", parts, log[min(mark, len(log)):])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
