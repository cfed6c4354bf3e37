package daemon

import (
	"os"
	"runtime/debug"
	"testing"
)

func TestPaceCollector(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, tc := range []struct {
		name, env string
		unset     bool
		want      int
	}{
		{"GOGC unset", "", true, gcPercent},
		{"GOGC set by the administrator", "50", false, 100}, // left as the runtime had it
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOGC", tc.env)
			if tc.unset {
				unsetenv(t, "GOGC")
			}
			debug.SetGCPercent(100)
			paceCollector()
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Errorf("GOGC %d, want %d", got, tc.want)
			}
		})
	}
}

// unsetenv unsets key for the test; t.Setenv first, so it is restored.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}
