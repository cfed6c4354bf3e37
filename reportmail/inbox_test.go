package reportmail

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// What the inbox keeps as unreadable is what Failures lists: the
// newest first, with where it came from and why, at most max of them.
func TestFailures(t *testing.T) {
	in := &Inbox{Kind: "dmarc", Failed: t.TempDir(), Log: slog.New(slog.DiscardHandler), Out: io.Discard,
		Take: func(context.Context, io.Reader) (Taken, error) {
			return Taken{}, fmt.Errorf("%w: no report here", ErrNotReport)
		}}
	for _, src := range []string{"first", "second"} {
		if err := in.One(context.Background(), strings.NewReader("not a report"), src); err != nil {
			t.Fatal(err)
		}
	}
	fs, total, err := Failures(in.Failed, 1)
	if err != nil || total != 2 || len(fs) != 1 {
		t.Fatalf("%d of %d: %v", len(fs), total, err)
	}
	if f := fs[0]; f.When == "" || !strings.Contains(f.Reason, "no report here") || !strings.HasSuffix(f.File, ".eml") {
		t.Errorf("%+v", f)
	}
	if fs, total, err := Failures("", 10); fs != nil || total != 0 || err != nil {
		t.Errorf("no folder: %v %d %v", fs, total, err)
	}
}
