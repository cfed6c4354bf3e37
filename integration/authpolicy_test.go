package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/store/storetest"
)

// imapLogin logs in over IMAP from the local address from (127.0.0.X:
// Dovecot sees it as the client's) and returns the tagged answer.
func imapLogin(t *testing.T, port int, from, user, pass string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "a LOGIN %q %q\r\n", user, pass)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("IMAP: %v", err)
		}
		if strings.HasPrefix(line, "a ") {
			fmt.Fprintf(c, "b LOGOUT\r\n")
			return strings.TrimSpace(line)
		}
	}
}

// The auth policy service through two real Dovecot nodes sharing one
// Redis: wrong passwords from one address, spread over both nodes,
// until the login is refused with our message on both; the same user
// from another address still gets in; with the store down, logins work.
func TestAuthPolicyDovecot(t *testing.T) {
	dir := filepath.Join(w.dir, "authpolicy")
	redis, err := storetest.NewRedis(filepath.Join(dir, "redis"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer redis.Stop()
	port, _ := FreePort()
	cfg := filepath.Join(dir, "wehr.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`hostname: %s
log: {level: debug}
store:
  backend: redis
  redis: {mode: single, addrs: [%s], timeout: 200ms}
authpolicy:
  api_key: it-secret
  login_hash_key: it-key
  delay_after: 8
  max_delay: 1s
  block_after: 10
`, authservID, redis.Addr)), 0o644)
	logPath := filepath.Join(dir, "wehr.log")
	logf, _ := os.Create(logPath)
	defer logf.Close()
	wehr := exec.Command(w.wehr.Bin, "--config", cfg, "authpolicy", "--listen", fmt.Sprintf("inet:127.0.0.1:%d", port))
	wehr.Stdout, wehr.Stderr = logf, logf
	if err := wehr.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { wehr.Process.Kill(); wehr.Wait() }()
	if err := WaitListening(port, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, Tail(logPath, 20))
	}
	// The README's Dovecot settings.
	policy := fmt.Sprintf(`auth_policy_server_url = http://127.0.0.1:%d/
auth_policy_server_api_header = X-API-Key: it-secret
auth_policy_hash_nonce = it-nonce
auth_policy_server_timeout_msecs = 2000
auth_policy_reject_on_fail = no
`, port)
	var nodes []int
	for i, name := range []string{"imap-a", "imap-b"} {
		lmtp, _ := FreePort()
		imap, _ := FreePort()
		d, err := StartDovecot(filepath.Join(dir, name), DovecotConfig{LMTPPort: lmtp, IMAPPort: imap, Name: "wehr-" + name,
			Users: []string{"alice@example.test", "bob@example.test"}, Extra: policy})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop()
		if err := WaitListening(imap, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, imap)
		if got := imapLogin(t, imap, "127.0.0.3", "alice@example.test", "alicepw"); !strings.HasPrefix(got, "a OK") {
			t.Fatalf("node %d: a good login: %s\n%s", i, got, Tail(d.Log(), 10))
		}
	}
	// Ten wrong passwords from 127.0.0.2, alternating between the nodes.
	for i := 0; i < 10; i++ {
		if got := imapLogin(t, nodes[i%2], "127.0.0.2", "alice@example.test", "wrong"); !strings.Contains(got, "NO") {
			t.Fatalf("wrong password %d: %s", i, got)
		}
	}
	for i, imap := range nodes {
		got := imapLogin(t, imap, "127.0.0.2", "alice@example.test", "alicepw")
		if !strings.HasPrefix(got, "a NO") || !strings.Contains(got, "Too many failed logins from your address; try again in 15 minutes") {
			t.Errorf("node %d: the right password from the guessing address: %s", i, got)
		}
	}
	// The user, from elsewhere, is not locked out.
	if got := imapLogin(t, nodes[1], "127.0.0.3", "alice@example.test", "alicepw"); !strings.HasPrefix(got, "a OK") {
		t.Errorf("the user from another address: %s", got)
	}
	log := readFile(logPath)
	if !strings.Contains(log, `msg="authpolicy: refused" command=allow remote=127.0.0.2 login=alice@example.test protocol=imap`) ||
		!strings.Contains(log, "authpolicy: blocking") {
		t.Errorf("log:\n%s", Tail(logPath, 20))
	}
	// wehr authpolicy show and reset, through Redis.
	out, err := wehrCmd(t, cfg, "authpolicy", "show", "127.0.0.2")
	if err != nil || !strings.Contains(out, "blocked (ip)") {
		t.Errorf("show: %v %s", err, out)
	}
	if out, err := wehrCmd(t, cfg, "authpolicy", "reset", "127.0.0.2"); err != nil {
		t.Errorf("reset: %v %s", err, out)
	}
	if got := imapLogin(t, nodes[0], "127.0.0.2", "alice@example.test", "alicepw"); !strings.HasPrefix(got, "a OK") {
		t.Errorf("after reset: %s", got)
	}
	// The store down: Dovecot's logins go on.
	redis.Stop()
	for i, imap := range nodes {
		if got := imapLogin(t, imap, "127.0.0.4", "bob@example.test", "bobpw"); !strings.HasPrefix(got, "a OK") {
			t.Errorf("node %d with the store down: %s", i, got)
		}
	}
	if !strings.Contains(readFile(logPath), "the store does not answer; allowing") {
		t.Errorf("no log line for the store down:\n%s", Tail(logPath, 10))
	}
}
