package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// ansiblePlaybook runs a playbook of ansible/tests against this machine
// (connection local) with vars, and returns its output.
func ansiblePlaybook(t *testing.T, playbook string, vars map[string]any, extra ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatal("ansible-playbook missing: scripts/install-test-deps installs Debian's ansible (make test does)")
	}
	dir := t.TempDir()
	vf := filepath.Join(dir, "vars.json")
	b, _ := json.Marshal(vars)
	os.WriteFile(vf, b, 0o644)
	args := append([]string{"-c", "local", "-i", "localhost,", "-e", "@" + vf, filepath.Join("..", "ansible", "tests", playbook)}, extra...)
	cmd := exec.Command("ansible-playbook", args...)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "rtmp"), "ANSIBLE_ROLES_PATH="+filepath.Join("..", "ansible", "roles"),
		"ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3", "ANSIBLE_STDOUT_CALLBACK=default", "ANSIBLE_PIPELINING=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var recapChanged = regexp.MustCompile(`ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0`)

// The wehr role, applied for real into a temporary root: the binary, a
// wehr.yaml that wehr config check passed, DKIM keys made on the host
// with their records fetched to the controller, the sender map, the
// unit from dist/; a second run changes nothing; --check --diff runs;
// and wehr serve starts from exactly the files it wrote.
func TestAnsibleWehrRole(t *testing.T) {
	root := t.TempDir()
	os.Chmod(root, 0o755)
	records := t.TempDir()
	milterPort, _ := FreePort()
	policyPort, _ := FreePort()
	metricsPort, _ := FreePort()
	vars := map[string]any{
		"wehr_root": root, "wehr_binary_src": w.wehr.Bin, "wehr_service_manager": "none",
		"wehr_manage_user": false, "wehr_user": "nobody", "wehr_group": "nogroup",
		"wehr_dkim_domains": []string{"example.test"}, "wehr_dns_records_dir": records,
		"wehr_senders": []string{"alice@example.test  alice@example.test"},
		"wehr_config": map[string]any{
			"hostname": "mx1.example.test",
			"milter":   map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", milterPort)},
			"policyd":  map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", policyPort)},
			"metrics":  map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", metricsPort)},
			"store":    map[string]any{"admin_socket": root + "/run/wehr/admin.sock"},
		},
	}
	start := time.Now()
	out, err := ansiblePlaybook(t, "wehr.yml", vars)
	first := time.Since(start)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	m := recapChanged.FindStringSubmatch(out)
	if m == nil || m[2] == "0" {
		t.Fatalf("first run changed nothing?\n%s", out)
	}
	for p, mode := range map[string]os.FileMode{
		"/usr/local/bin/wehr": 0o755, "/etc/wehr/wehr.yaml": 0o640, "/etc/wehr/senders": 0o640,
		"/var/lib/wehr": 0o700, "/etc/systemd/system/wehr.service": 0o644,
	} {
		fi, err := os.Stat(root + p)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want %v", p, err, fi, mode)
		}
	}
	unit, _ := os.ReadFile(root + "/etc/systemd/system/wehr.service")
	dist, _ := os.ReadFile("../dist/wehr.service")
	if string(unit) != string(dist) {
		t.Error("the unit is not dist/wehr.service")
	}
	keys, _ := filepath.Glob(root + "/var/lib/wehr/dkim/example.test/*.pem")
	zone, _ := os.ReadFile(filepath.Join(records, "localhost-example.test.zone"))
	if len(keys) != 2 || !strings.Contains(string(zone), "._domainkey.example.test. IN TXT") {
		t.Fatalf("keys %v, records %q", keys, zone)
	}
	if !strings.Contains(out, "_domainkey.example.test") {
		t.Error("the play does not print the records to publish")
	}

	start = time.Now()
	out, err = ansiblePlaybook(t, "wehr.yml", vars)
	second := time.Since(start)
	if m := recapChanged.FindStringSubmatch(out); err != nil || m == nil || m[2] != "0" {
		t.Fatalf("second run: %v, want changed=0\n%s", err, out)
	}
	if out, err := ansiblePlaybook(t, "wehr.yml", vars, "--check", "--diff"); err != nil {
		t.Fatalf("--check --diff: %v\n%s", err, out)
	}
	t.Logf("first run %v, second run %v", first.Round(100*time.Millisecond), second.Round(100*time.Millisecond))

	// A broken setting is refused by wehr config check, file unchanged.
	bad := map[string]any{}
	for k, v := range vars {
		bad[k] = v
	}
	bad["wehr_config"] = map[string]any{"dns": map[string]any{"timout": "2s"}}
	before, _ := os.ReadFile(root + "/etc/wehr/wehr.yaml")
	if out, err := ansiblePlaybook(t, "wehr.yml", bad); err == nil || !strings.Contains(out, "dns.timout") {
		t.Fatalf("a bad config was accepted: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(root + "/etc/wehr/wehr.yaml"); string(after) != string(before) {
		t.Fatal("the bad config replaced the good one")
	}

	// wehr serve from exactly these files.
	os.MkdirAll(root+"/run/wehr", 0o755)
	cmd := exec.Command(root+"/usr/local/bin/wehr", "--config", root+"/etc/wehr/wehr.yaml", "--resolver", w.dns.Addr(), "serve")
	logf, _ := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := WaitListening(milterPort, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, Tail(logf.Name(), 20))
	}
	var code int
	for range 50 {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)); err == nil {
			code = resp.StatusCode
			resp.Body.Close()
			if code == 200 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 {
		t.Fatalf("/readyz %d\n%s", code, Tail(logf.Name(), 20))
	}
	if log := readFile(logf.Name()); !strings.Contains(log, "dkim_domains=1") || !strings.Contains(log, "sender_map=true") {
		t.Errorf("wehr did not load the keys and sender map the role wrote:\n%s", log)
	}
}

// ansible-lint, production profile, offline: the roles as they are.
func TestAnsibleLint(t *testing.T) {
	if _, err := exec.LookPath("ansible-lint"); err != nil {
		t.Fatal("ansible-lint missing: scripts/install-test-deps installs it (make test does)")
	}
	cmd := exec.Command("ansible-lint", "--offline", "--nocolor", "-p", "--profile", "production")
	cmd.Dir = "../ansible"
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_ROLES_PATH=roles")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Passed with production profile: 0 failure(s), 0 warning(s)") {
		t.Fatalf("ansible-lint: %v\n%s", err, out)
	}
}
