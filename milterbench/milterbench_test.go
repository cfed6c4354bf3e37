package milterbench

import (
	"context"
	"github.com/wehr/wehr/listener"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/milter"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// The corpus, its DNS and a wehr milter in one process: every message
// gets the verdict the manifest expects.
func TestCorpusAgainstWehr(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir, 28); err != nil {
		t.Fatal(err)
	}
	zone, err := os.ReadFile(filepath.Join(dir, "zone.txt"))
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t, string(zone))
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	engine := mailauth.NewEngine(res, mailauth.Config{AuthservID: "mx.test", DMARC: mailauth.DMARCConfig{MailingLists: mailauth.MailingLists{Enabled: true}}})
	m := milter.New(engine, milter.Config{AuthservID: "mx.test"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := listener.Listen(listener.Address{Network: "tcp", Address: "127.0.0.1:0"}, listener.SocketPerms{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	rep, err := Run(context.Background(), Options{Addrs: []string{"inet:" + ln.Addr().String()}, Corpus: dir, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out, "wehr")
	t.Log(out.String())
	if rep.Messages != 28 || rep.Errors != 0 || rep.Agree["action"] != 28 || rep.Agree["dkim"] != rep.Checked["dkim"] || rep.Checked["dkim"] == 0 {
		t.Fatalf("report:\n%s", out.String())
	}
	for _, a := range []string{"accept", "quarantine", "reject"} {
		if rep.Actions[a] == 0 {
			t.Errorf("no %s in the corpus run", a)
		}
	}
	// A chain of the same milter twice: the second sees the first's A-R
	// and removes it (our authserv-id), so the verdicts stay the same.
	rep, err = Run(context.Background(), Options{Addrs: []string{"inet:" + ln.Addr().String(), "inet:" + ln.Addr().String()}, Corpus: dir, Concurrency: 2})
	if err != nil || rep.Agree["action"] != 28 {
		t.Fatalf("chain: %+v %v", rep, err)
	}
}
