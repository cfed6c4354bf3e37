// Package integration runs wehr end to end against real programs started
// on loopback by the tests themselves: a private Postfix instance, Dovecot
// delivering over LMTP into Maildirs (with Sieve), the in-process test DNS
// server, and the real wehr binary. Nothing here touches the machine's own
// Postfix or Dovecot configuration, and nothing imports this package.
//
// The tests need root (a private Postfix instance runs its master as
// root) and the Debian packages that scripts/install-test-deps installs.
// When either is missing they fail, never skip: CI must not pass by not
// testing.
package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Programs the harness runs, with absolute paths (CI's PATH may lack
// /usr/sbin).
var programs = map[string]string{
	"postfix": "/usr/sbin/postfix",
	"dovecot": "/usr/sbin/dovecot",
	"ss":      "/usr/bin/ss",
}

// CheckPrograms returns an error naming what is missing for the
// integration tests.
func CheckPrograms() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("integration tests must run as root (a private Postfix instance needs it)")
	}
	var missing []string
	for name, p := range programs {
		if _, err := os.Stat(p); err != nil {
			if alt, err := exec.LookPath(name); err == nil {
				programs[name] = alt
				continue
			}
			missing = append(missing, name)
		}
	}
	if _, err := os.Stat("/usr/lib/dovecot/modules/lib90_sieve_plugin.so"); err != nil {
		missing = append(missing, "dovecot-sieve")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run scripts/install-test-deps (make test does)", strings.Join(missing, ", "))
	}
	return nil
}

// WorkDir makes a short work directory under /tmp (unix socket paths are
// limited to 108 bytes) that the postfix and dovecot users can traverse.
func WorkDir(prefix string) (string, error) {
	d, err := os.MkdirTemp("/tmp", prefix)
	if err != nil {
		return "", err
	}
	// 0700 from MkdirTemp keeps the postfix user out of its own data
	// directory below it.
	return d, os.Chmod(d, 0o711)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreePorts returns n distinct TCP ports on 127.0.0.1, all free a
// moment ago (held open together while they are chosen, so that two
// calls cannot return the same one).
func FreePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// WaitListening waits until something listens on the TCP port, asking the
// kernel (ss) rather than connecting: a connection would show up in the
// programs' logs and, for a milter port, open a session.
func WaitListening(port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, _ := exec.Command(programs["ss"], "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after %v", port, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitClosed waits until nothing listens on the port.
func WaitClosed(port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, _ := exec.Command(programs["ss"], "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
		if len(bytes.TrimSpace(out)) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("port %d still in use after %v", port, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeFile writes a file and backdates it: Postfix re-reads a main.cf
// younger than 2 s every 300 ms before doing anything (2.5 s per
// command otherwise).
func writeFile(path, text string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		return err
	}
	old := time.Now().Add(-time.Minute)
	return os.Chtimes(path, old, old)
}

// killPIDFile stops the process whose PID a file holds and waits for it.
func killPIDFile(path string, timeout time.Duration) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM) //nolint:errcheck
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck
}

// Tail returns the last n lines of a log file, for failure messages.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// TB is what the harness needs of a test.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

var _ TB = (*testing.T)(nil)
