package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// policyRequest sends one policy request and returns the action line.
func policyRequest(port int) (string, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	fmt.Fprint(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.10\n"+
		"client_name=mail.good.example\nreverse_client_name=mail.good.example\nhelo_name=mail.good.example\n"+
		"sender=a@good.example\nrecipient=alice@example.test\ninstance=dos.1\n\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// Issue 10.8: with a low open-file limit, hundreds of connections to the
// milter end in EMFILE on accept. The daemon keeps running, logs it,
// and serves again as soon as descriptors are free.
func TestDaemonSurvivesFDExhaustion(t *testing.T) {
	dir := filepath.Join(w.dir, "fdlimit")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ports := map[string]int{}
	for _, p := range []string{"milter", "policyd"} {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[p] = port
	}
	cfg := fmt.Sprintf(`authserv_id: fd.example.test
hostname: fd.example.test
dns: {timeout: 1s, attempts: 1}
milter:
  listen: inet:127.0.0.1:%d
store:
  backend: embedded
  path: %s
  admin_socket: %s
policyd:
  listen: inet:127.0.0.1:%d
  local_domains: [example.test]
`, ports["milter"], filepath.Join(dir, "wehr.db"), filepath.Join(dir, "admin.sock"), ports["policyd"])
	wh, err := NewWehr(filepath.Join(w.dir, "wehr"), dir, cfg, w.dns.Addr(), ports["milter"])
	if err != nil {
		t.Fatal(err)
	}
	wh.NoFile = 64
	if err := wh.Start(); err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()
	if a, err := policyRequest(ports["policyd"]); err != nil || !strings.HasPrefix(a, "action=") {
		t.Fatalf("before: %q %v", a, err)
	}

	var conns []net.Conn
	for range 320 {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", ports["milter"]), time.Second)
		if err != nil {
			break // the backlog is full: enough
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(readFile(wh.Log), "too many open files") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	log := readFile(wh.Log)
	if !strings.Contains(log, "milter: accept failed; retrying") || !strings.Contains(log, "too many open files") {
		t.Fatalf("no EMFILE logged after %d connections:\n%s", len(conns), Tail(wh.Log, 20))
	}
	for _, c := range conns {
		c.Close()
	}
	select {
	case <-wh.done:
		t.Fatalf("wehr stopped:\n%s", Tail(wh.Log, 20))
	case <-time.After(time.Second):
	}
	var a string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if a, err = policyRequest(ports["policyd"]); err == nil && strings.HasPrefix(a, "action=") {
			break
		}
	}
	if !strings.HasPrefix(a, "action=") {
		t.Fatalf("policy service after the flood: %q %v\n%s", a, err, Tail(wh.Log, 20))
	}
	if strings.Contains(readFile(wh.Log), "wehr: stopped") {
		t.Fatal("the daemon stopped")
	}
}

// Local users: with the documented unix sockets (group postfix, in a
// directory of group postfix), an account that is not Postfix cannot
// reach the milter or the policy service; over loopback TCP it could
// spend a customer's sending limit (issue 10, local users).
func TestSocketsRefuseOtherLocalUsers(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	dir := filepath.Dir(w.wehr.MilterSocket)
	for _, sock := range []string{"milter.sock", "policy.sock"} {
		path := filepath.Join(dir, sock)
		connect := func(cred *syscall.Credential) error {
			cmd := exec.Command("/usr/bin/python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])", path)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
		if err := connect(&syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("%s: nobody connected (%v)", sock, err)
		}
		// The postfix user can: what smtpd runs as.
		pf, err := user.Lookup("postfix")
		if err != nil {
			t.Fatal(err)
		}
		puid, _ := strconv.Atoi(pf.Uid)
		pgid, _ := strconv.Atoi(pf.Gid)
		if err := connect(&syscall.Credential{Uid: uint32(puid), Gid: uint32(pgid)}); err != nil {
			t.Errorf("%s: postfix cannot connect: %v", sock, err)
		}
	}
}
