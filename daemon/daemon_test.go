package daemon

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/config"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/web"
)

// syncBuffer is a log sink safe for the daemon's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// since returns what was logged after mark (a length from len()).
func (s *syncBuffer) since(mark int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()[mark:]
}

func (s *syncBuffer) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// world is a running daemon (milter and policy service, embedded store,
// one DKIM key, a sender map) over a config file the test rewrites.
type world struct {
	d       *Daemon
	path    string
	base    string // the config text; a test appends to it
	senders string
	log     *syncBuffer
}

func start(t *testing.T) *world { t.Helper(); return startWith(t, "", nil) }

// startWith is start with more of the config (base) and options.
func startWith(t *testing.T, base string, opt func(*Options)) *world {
	t.Helper()
	dir := t.TempDir()
	ks := &dkimkeys.Store{Dir: filepath.Join(dir, "keys")}
	if _, err := ks.Generate("example.org", "a", dkimkeys.Ed25519, dkimkeys.Active, time.Now()); err != nil {
		t.Fatal(err)
	}
	w := &world{path: filepath.Join(dir, "wehr.yaml"), senders: filepath.Join(dir, "senders"), log: &syncBuffer{}}
	if err := os.WriteFile(w.senders, []byte("alice @example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.base = fmt.Sprintf(`hostname: mx.example.test
authserv_id: mx.example.test
milter: {listen: "inet:127.0.0.1:%d"}
policyd: {listen: "inet:127.0.0.1:%d"}
store:
  path: %s
  admin_socket: %s
`, freePort(t), freePort(t), filepath.Join(dir, "wehr.db"), filepath.Join(dir, "admin.sock")) + base
	w.write(t, "dkim: {keys_dir: "+ks.Dir+", sender_map: "+w.senders+", rotation_overlap: 1h}\n")
	cfg, err := config.Load(w.path)
	if err != nil {
		t.Fatal(err)
	}
	srv := dnstest.New(t, "")
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Config: cfg, Path: w.path, Log: slog.New(slog.NewTextHandler(w.log, nil)), Resolver: res, Milter: true, Policyd: true}
	if opt != nil {
		opt(&o)
	}
	w.d = New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for i := 0; !strings.Contains(w.log.since(0), "milter listening"); i++ {
		if i > 200 {
			t.Fatalf("not started:\n%s", w.log.since(0))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return w
}

// write makes the config file the base text plus extra.
func (w *world) write(t *testing.T, extra string) {
	t.Helper()
	if err := os.WriteFile(w.path, []byte(w.base+extra), 0o644); err != nil {
		t.Fatal(err)
	}
}

// warned lists the restart-only keys a log text names.
func warned(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "needs a restart") {
			_, k, _ := strings.Cut(l, "key=")
			out = append(out, k)
		}
	}
	return out
}

func TestTwoReloadsInARow(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	keys := "dkim: {keys_dir: " + w.d.Config().DKIM.KeysDir + ", sender_map: " + w.senders
	listen := w.d.Config().Milter.Listen

	// First reload: a setting a reload applies, and one it cannot.
	w.write(t, keys+", rotation_overlap: 2h}\ndmarc: {refusal: quarantine}\ndns: {timeout: 3s}\n")
	mark := w.log.len()
	if !w.d.Reload(ctx) {
		t.Fatalf("reload refused:\n%s", w.log.since(mark))
	}
	cfg := w.d.Config()
	if cfg.DKIM.RotationOverlap != 2*time.Hour || cfg.DMARC.Refusal != "quarantine" {
		t.Fatalf("after the first reload: rotation_overlap %v, refusal %s", cfg.DKIM.RotationOverlap, cfg.DMARC.Refusal)
	}
	if cfg.DNS.Timeout == 3*time.Second {
		t.Fatal("a restart-only key took effect")
	}
	if got := warned(w.log.since(mark)); fmt.Sprint(got) != "[dns]" {
		t.Fatalf("first reload warned %v", got)
	}

	// Second reload: it starts from the first one's values, and adds
	// another restart-only change.
	w.base = strings.Replace(w.base, "milter: {listen: \""+listen+"\"}", "milter: {listen: \""+listen+"\", max_connections: 7}", 1)
	w.write(t, keys+", rotation_overlap: 2h}\ndmarc: {refusal: quarantine}\ndns: {timeout: 3s}\n")
	mark = w.log.len()
	if !w.d.Reload(ctx) {
		t.Fatalf("second reload refused:\n%s", w.log.since(mark))
	}
	cfg = w.d.Config()
	if cfg.DKIM.RotationOverlap != 2*time.Hour || cfg.DMARC.Refusal != "quarantine" {
		t.Fatalf("after the second reload: rotation_overlap %v, refusal %s", cfg.DKIM.RotationOverlap, cfg.DMARC.Refusal)
	}
	// Still not in effect: dns is named again; max_connections is new.
	if got := warned(w.log.since(mark)); fmt.Sprint(got) != "[milter.max_connections dns]" {
		t.Fatalf("second reload warned %v", got)
	}
	if cfg.Milter.MaxConnections == 7 || cfg.Milter.Listen != listen {
		t.Fatalf("restart-only milter keys changed: %+v", cfg.Milter)
	}

	// The file back as the process started: nothing to warn about.
	w.base = strings.Replace(w.base, ", max_connections: 7", "", 1)
	w.write(t, keys+", rotation_overlap: 1h}\n")
	mark = w.log.len()
	w.d.Reload(ctx)
	if got := warned(w.log.since(mark)); len(got) != 0 {
		t.Fatalf("reverted file warned %v", got)
	}
	if w.d.Config().DKIM.RotationOverlap != time.Hour || w.d.Config().DMARC.Refusal != "evidence" {
		t.Fatal("the reverted file did not take effect")
	}
}

func TestRefusedReloadLoadsNothing(t *testing.T) {
	w := start(t)
	ctx := context.Background()
	before := w.d.Config()
	// A sender map that changed, and a config file with a problem.
	if err := os.WriteFile(w.senders, []byte("alice @example.org\nbob @example.org\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w.write(t, "dkim: {keys_dir: "+before.DKIM.KeysDir+", sender_map: "+w.senders+"}\ndmarc: {refusal: sometimes}\n")
	mark := w.log.len()
	if w.d.Reload(ctx) {
		t.Fatal("a file with a problem was taken")
	}
	log := w.log.since(mark)
	if !strings.Contains(log, "config not reloaded: "+w.path+":") || !strings.Contains(log, "dmarc.refusal") {
		t.Fatalf("the problem is not logged with its file and key:\n%s", log)
	}
	for _, loaded := range []string{"DKIM keys loaded", "sender map loaded", "configuration reloaded"} {
		if strings.Contains(log, loaded) {
			t.Fatalf("a refused reload logged %q:\n%s", loaded, log)
		}
	}
	if !strings.Contains(log, "reload refused") {
		t.Fatalf("no line says the reload was refused:\n%s", log)
	}
	if w.d.Config() != before {
		t.Fatal("the running configuration changed")
	}
	if n := w.d.senders.Map().Size; n != 1 {
		t.Fatalf("the sender map was reloaded: %d entries", n)
	}

	// Fixed: everything loads.
	w.write(t, "dkim: {keys_dir: "+before.DKIM.KeysDir+", sender_map: "+w.senders+"}\n")
	mark = w.log.len()
	if !w.d.Reload(ctx) {
		t.Fatalf("good file refused:\n%s", w.log.since(mark))
	}
	for _, loaded := range []string{"DKIM keys loaded", "sender map loaded", "configuration reloaded"} {
		if !strings.Contains(w.log.since(mark), loaded) {
			t.Fatalf("no %q after a good reload", loaded)
		}
	}
	if n := w.d.senders.Map().Size; n != 2 {
		t.Fatalf("sender map after a good reload: %d entries", n)
	}
}

func TestNextReportRun(t *testing.T) {
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ now, want time.Duration }{
		{0, 5 * time.Minute},
		{4*time.Minute + 59*time.Second, 5 * time.Minute},
		{5 * time.Minute, time.Hour + 5*time.Minute},
		{23*time.Hour + 59*time.Minute, 24*time.Hour + 5*time.Minute},
	} {
		if got := nextReportRun(day.Add(tc.now)); !got.Equal(day.Add(tc.want)) {
			t.Errorf("at %v: %v, want %v", tc.now, got.Sub(day), tc.want)
		}
	}
}

// A token added to web.tokens lets its reader in after a reload, and a
// removed one no longer does; web.listen is named as needing a restart.
func TestWebTokensReload(t *testing.T) {
	port := freePort(t)
	oldTok, oldHash := web.NewToken()
	newTok, newHash := web.NewToken()
	line := func(name, hash string) string {
		return fmt.Sprintf("    - {name: %s, hash: \"%s\", admin: true}\n", name, hash)
	}
	w := startWith(t, fmt.Sprintf("web:\n  listen: \"inet:127.0.0.1:%d\"\n  tokens:\n", port)+line("old", oldHash), func(o *Options) { o.Web = true })
	status := func(tok string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
		req.SetBasicAuth("", tok)
		for i := 0; ; i++ {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode
			}
			if i == 100 {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st := status(oldTok); st != 200 {
		t.Fatalf("the token the daemon started with: %d", st)
	}
	if st := status(newTok); st != 401 {
		t.Fatalf("a token not configured yet: %d", st)
	}
	w.base = strings.Replace(w.base, line("old", oldHash), line("new", newHash), 1)
	w.base = strings.Replace(w.base, fmt.Sprintf("127.0.0.1:%d\"", port), fmt.Sprintf("127.0.0.1:%d\"", port+1), 1)
	w.write(t, "dkim: {keys_dir: "+w.d.Config().DKIM.KeysDir+", sender_map: "+w.senders+", rotation_overlap: 1h}\n")
	mark := w.log.len()
	if !w.d.Reload(context.Background()) {
		t.Fatalf("reload refused:\n%s", w.log.since(mark))
	}
	if st := status(newTok); st != 200 {
		t.Errorf("the new token after the reload: %d", st)
	}
	if st := status(oldTok); st != 401 {
		t.Errorf("the removed token after the reload: %d", st)
	}
	if got := warned(w.log.since(mark)); fmt.Sprint(got) != "[web.listen]" {
		t.Errorf("the reload warned %v", got)
	}
}
