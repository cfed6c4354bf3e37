package authpolicy

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wehr/wehr/store"
)

// Whatever reaches the service gets a 200 or a 4xx, never a crash.
func FuzzServe(f *testing.F) {
	f.Add("allow", body("alice@example.test", "192.0.2.1"))
	f.Add("report", report("alice@example.test", "2001:db8::1", false))
	f.Add("report", `{"remote":"192.0.2.1","success":true}`)
	f.Add("allow", `{"remote":"::ffff:192.0.2.1","login":"\u0000:x"}`)
	st, err := store.OpenEmbedded(filepath.Join(f.TempDir(), "s.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(New(Default(), st, log), log, nil)
	f.Fuzz(func(t *testing.T, command, b string) {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest("POST", "/?command="+url.QueryEscape(command), strings.NewReader(b)))
		if rec.Code != 200 && (rec.Code < 400 || rec.Code >= 500) {
			t.Fatalf("HTTP %d for %q %q", rec.Code, command, b)
		}
	})
}
