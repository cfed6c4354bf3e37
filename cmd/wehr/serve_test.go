package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver/dnstest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// wehr serve with the embedded store; the ops commands reach the store
// through its admin socket.
func TestServeAndOpsCommands(t *testing.T) {
	dir := t.TempDir()
	srv := dnstest.New(t, `20.2.0.192.bl.test. 300 IN A 127.0.0.2`)
	policyPort, metricsPort := freePort(t), freePort(t)
	cfg := emptyConfig(t, fmt.Sprintf(`hostname: mx.test
log: {level: warn}
milter: {listen: "inet:127.0.0.1:%d"}
store:
  path: %s
  admin_socket: %s
policyd:
  listen: inet:127.0.0.1:%d
  dns_lists: [{zone: bl.test, weight: 5}]
metrics:
  listen: inet:127.0.0.1:%d
`, freePort(t), filepath.Join(dir, "wehr.db"), filepath.Join(dir, "admin.sock"), policyPort, metricsPort))

	ctx, cancel := context.WithCancel(context.Background())
	var serveErr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--resolver", srv.Addr(), "serve"}, strings.NewReader(""), &bytes.Buffer{}, &serveErr)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d: %s", code, serveErr.String())
		}
	}()
	// Wait for the admin socket.
	var code int
	var out, stderr string
	for range 100 {
		code, out, stderr = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "policyd", "test",
			"--client-address", "192.0.2.30", "--helo", "mail.x.example", "--sender", "a@x.example", "--recipient", "alice@example.test")
		if code == 0 {
			break
		}
		time.Sleep(30 * time.Millisecond)
	}
	if code != 0 || !strings.Contains(out, "action: 450 4.7.1 Greylisted: please retry in 300 seconds") || !strings.Contains(out, "fcrdns") {
		t.Fatalf("policyd test: %d %s %s", code, out, stderr)
	}
	code, out, _ = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "--json", "policyd", "test",
		"--client-address", "192.0.2.20", "--helo", "mail.x.example", "--sender", "a@x.example", "--recipient", "alice@example.test")
	if code != 0 || !strings.Contains(out, `"action":"554 5.7.1 Service unavailable; client [192.0.2.20] is listed on bl.test (127.0.0.2)"`) {
		t.Fatalf("listed: %d %s", code, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "greylist", "show")
	if code != 0 || !strings.Contains(out, "192.0.2.0/24:a@x.example:alice@example.test") {
		t.Fatalf("greylist show: %d %q", code, out)
	}
	if code, out, _ = wehr(t, "--config", cfg, "greylist", "allow", "192.0.2.30"); code != 0 || !strings.Contains(out, "192.0.2.0/24 will not be greylisted") {
		t.Fatalf("greylist allow: %d %s", code, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "policyd", "test",
		"--client-address", "192.0.2.31", "--helo", "mail.x.example", "--sender", "b@x.example", "--recipient", "alice@example.test")
	if code != 0 || !strings.Contains(out, "action: DUNNO") {
		t.Fatalf("after allow: %d %s", code, out)
	}
	// Issue 12.2: greylist show says passes had and needed, and honours --json.
	if code, out, _ = wehr(t, "--config", cfg, "greylist", "show", "192.0.2.0/24"); code != 0 || !strings.Contains(out, "network 192.0.2.0/24: allowlisted, not greylisted (1000000 passes, 5 needed)") {
		t.Fatalf("greylist show: %d %q", code, out)
	}
	code, out, _ = wehr(t, "--config", cfg, "--json", "greylist", "show")
	var gl struct {
		Entries  []string `json:"entries"`
		Networks []struct {
			Network     string `json:"network"`
			Passes      int64  `json:"passes"`
			Needed      int64  `json:"needed"`
			Allowlisted bool   `json:"allowlisted"`
		} `json:"networks"`
	}
	if err := json.Unmarshal([]byte(out), &gl); code != 0 || err != nil || len(gl.Networks) != 1 || !gl.Networks[0].Allowlisted || gl.Networks[0].Needed != 5 || len(gl.Entries) == 0 {
		t.Fatalf("greylist show --json: %d %v %q", code, err, out)
	}
	if code, out, _ = wehr(t, "--config", cfg, "reputation", "show", "192.0.2.20"); code != 0 || out != "192.0.2.20: passed 0, refused 1\nnetwork 192.0.2.0/24: passed 0, refused 1\n" {
		t.Fatalf("reputation: %d %q", code, out)
	}
	if code, _, _ = wehr(t, "--config", cfg, "greylist", "remove", "192.0.2.0/24:a@x.example:alice@example.test", "192.0.2.0/24"); code != 0 {
		t.Fatal("greylist remove")
	}
	if code, out, _ = wehr(t, "--config", cfg, "greylist", "show"); code != 0 || strings.TrimSpace(out) != "" {
		t.Fatalf("after remove: %q", out)
	}
	// The daemon's own decisions are in its metrics.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", policyPort))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.20\nhelo_name=x.example\nsender=a@x.example\nrecipient=alice@example.test\n\n")
	if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(line, "action=554 5.7.1") {
		t.Fatalf("policy answer %q", line)
	}
	c.Close()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`wehr_policyd_decisions_total{action="554",check="dnsbl",context="mx"} 1`, "wehr_dns_lookups_total", "wehr_policyd_decision_seconds_count 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// doctor sees the running daemons and the store; without DKIM keys it
	// warns but does not fail.
	code, out, stderr = wehr(t, "--config", cfg, "--resolver", srv.Addr(), "doctor", "--no-postfix")
	if code != 0 {
		t.Fatalf("doctor: exit %d: %s%s", code, out, stderr)
	}
	for _, want := range []string{"ok    store", "ok    milter", "ok    policyd", "ok    metrics", "ok    dns", "warn  dkim "} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	// A second serve cannot take the store file.
	code, _, stderr = wehr(t, "--config", cfg, "serve", "--milter-listen", fmt.Sprintf("inet:127.0.0.1:%d", freePort(t)))
	if code == 0 || !strings.Contains(stderr, "in use by another process") {
		t.Fatalf("second serve: %d %s", code, stderr)
	}
	// policyd alone refuses the embedded store, saying why.
	if code, _, stderr = wehr(t, "--config", cfg, "policyd"); code != 2 || !strings.Contains(stderr, "store.backend: redis") {
		t.Fatalf("policyd alone: %d %s", code, stderr)
	}
}
