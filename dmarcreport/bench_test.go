package dmarcreport

import (
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/store"
)

// BenchmarkRecord is what the milter pays per message for reporting:
// the rows made and queued (the store writes happen elsewhere).
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(store.Down{Err: errors.New("bench")}, 10, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	v := verdict(mailauth.DMARCFail, "reject", "reject", []string{"mailto:d@bank.example"})
	b.ReportAllocs()
	for b.Loop() {
		r.Record(v, env)
	}
}
