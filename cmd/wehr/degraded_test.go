package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/resolver/dnstest"
)

// milterSend runs one message through a milter at addr, as Postfix would.
func milterSend(t *testing.T, addr, ip, from string, headers [][2]string) ([]milter.ModifyAction, *milter.Action) {
	t.Helper()
	c := milter.NewClient("tcp", addr, milter.WithReadTimeout(10*time.Second), milter.WithWriteTimeout(10*time.Second))
	s, err := c.Session(milter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []func() (*milter.Action, error){
		func() (*milter.Action, error) { return s.Conn("client", milter.FamilyInet, 40000, ip) },
		func() (*milter.Action, error) { return s.Helo("client") },
		func() (*milter.Action, error) { return s.Mail(from, "") },
		func() (*milter.Action, error) { return s.Rcpt("user@mx.test", "") },
		func() (*milter.Action, error) { return s.DataStart() },
	}
	for _, h := range headers {
		steps = append(steps, func() (*milter.Action, error) { return s.HeaderField(h[0], h[1], nil) })
	}
	steps = append(steps, s.HeaderEnd, func() (*milter.Action, error) { return s.BodyChunk([]byte("Hello.\r\n")) })
	for _, st := range steps {
		if _, err := st(); err != nil {
			t.Fatal(err)
		}
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

// One bad key file (0644) and a store that cannot be opened: wehr serve
// starts all the same, verifies inbound mail, signs the domains whose
// keys are sound, tempfails the broken domain's outbound mail, logs it
// loudly, and doctor says FAIL (issue 10, local users).
func TestServeStartsDespiteBrokenParts(t *testing.T) {
	dir := t.TempDir()
	ks := &dkimkeys.Store{Dir: filepath.Join(dir, "keys")}
	bad, err := ks.Generate("example.org", "a", dkimkeys.Ed25519, dkimkeys.Active, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.Generate("example.net", "b", dkimkeys.Ed25519, dkimkeys.Active, time.Now()); err != nil {
		t.Fatal(err)
	}
	os.Chmod(bad.Path, 0o644) //nolint:errcheck
	senders := filepath.Join(dir, "senders")
	os.WriteFile(senders, []byte("127.0.0.0/8 @example.org @example.net\n"), 0o644) //nolint:errcheck
	// The store's directory is a file: nothing can create it.
	blocker := filepath.Join(dir, "blocker")
	os.WriteFile(blocker, nil, 0o644) //nolint:errcheck
	srv := dnstest.New(t, "")
	milterPort, policyPort := freePort(t), freePort(t)
	cfg := emptyConfig(t, fmt.Sprintf(`hostname: mx.test
authserv_id: mx.test
log: {level: info}
milter: {listen: "inet:127.0.0.1:%d"}
dkim: {keys_dir: %s, sender_map: %s}
store:
  path: %s
  admin_socket: %s
policyd:
  listen: inet:127.0.0.1:%d
`, milterPort, ks.Dir, senders, filepath.Join(blocker, "wehr.db"), filepath.Join(dir, "admin.sock"), policyPort))

	ctx, cancel := context.WithCancel(context.Background())
	serveErr := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--resolver", srv.Addr(), "serve"}, strings.NewReader(""), &bytes.Buffer{}, serveErr)
	}()
	defer func() {
		cancel()
		<-done
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", milterPort)
	for i := 0; ; i++ {
		if c, err := dialTCP(addr); err == nil {
			c.Close()
			break
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited %d: %s", code, serveErr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if i > 100 {
			t.Fatal("milter not listening")
		}
	}
	// Inbound: verified.
	mods, act := milterSend(t, addr, "203.0.113.5", "x@evil.example", [][2]string{{"From", " a@none.example"}})
	if act.Type != milter.ActionAccept || len(mods) != 1 || mods[0].HeaderName != "Authentication-Results" {
		t.Fatalf("inbound: %+v %+v", act, mods)
	}
	// Outbound of the sound domain: signed.
	mods, act = milterSend(t, addr, "127.0.0.1", "a@example.net", [][2]string{{"From", " a@example.net"}})
	if act.Type != milter.ActionAccept || len(mods) != 1 || mods[0].HeaderName != "DKIM-Signature" {
		t.Fatalf("example.net: %+v %+v", act, mods)
	}
	// Outbound of the broken domain: 451, it stays queued.
	_, act = milterSend(t, addr, "127.0.0.1", "a@example.org", [][2]string{{"From", " a@example.org"}})
	if act.Type != milter.ActionRejectWithCode || act.SMTPCode != 451 || !strings.Contains(act.SMTPReply, "4.3.0 The DKIM key of example.org") {
		t.Fatalf("example.org: %+v", act)
	}
	log := serveErr.String()
	for _, want := range []string{"DKIM keys broken; starting without them", "broken_domains=example.org", "the store cannot be opened; running without it"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	code, out, _ := wehr(t, "--config", cfg, "--resolver", srv.Addr(), "doctor", "--no-postfix")
	if code == 0 || !strings.Contains(out, "FAIL  dkim example.org") || !strings.Contains(out, "FAIL  store") {
		t.Errorf("doctor: %d\n%s", code, out)
	}
}

// syncBuffer is a bytes.Buffer safe for a daemon's log and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func dialTCP(addr string) (interface{ Close() error }, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
