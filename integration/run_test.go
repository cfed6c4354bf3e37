package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wehr/wehr/milterbench"
	"github.com/wehr/wehr/resolver/dnstest"
)

// `make run`'s script, as an ordinary user (nobody when the tests run as
// root): wehr serve starts without root and without a config file of the
// user's, its milter gives every corpus message the expected verdict,
// and the ops commands reach its embedded store.
func TestMakeRun(t *testing.T) {
	// Everything nobody must read or write lives under one open directory.
	top, err := os.MkdirTemp("", "wehr-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o777); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(top, "wehr")
	if err := copyFile(w.wehr.Bin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	corpus := filepath.Join(top, "corpus")
	if err := milterbench.Generate(corpus, 28); err != nil {
		t.Fatal(err)
	}
	zone, err := os.ReadFile(filepath.Join(corpus, "zone.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dns := dnstest.New(t, string(zone))
	ports := map[string]int{}
	for _, p := range []string{"milter", "policyd", "metrics"} {
		if ports[p], err = FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	runDir := filepath.Join(top, "run")
	asUser := func(cmd *exec.Cmd) {
		if os.Getuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		}
	}
	logPath := filepath.Join(top, "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("../scripts/run-local", runDir, "--resolver", dns.Addr())
	cmd.Env = append(os.Environ(), "WEHR="+bin,
		fmt.Sprintf("MILTER_LISTEN=inet:127.0.0.1:%d", ports["milter"]),
		fmt.Sprintf("POLICYD_LISTEN=inet:127.0.0.1:%d", ports["policyd"]),
		fmt.Sprintf("METRICS_LISTEN=inet:127.0.0.1:%d", ports["metrics"]))
	cmd.Stdout, cmd.Stderr = logf, logf
	asUser(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() error {
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
		return cmd.Wait()
	}
	defer func() {
		if !stopped {
			stop() //nolint:errcheck
		}
	}()
	for _, p := range []string{"milter", "policyd"} {
		if err := WaitListening(ports[p], 15*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", p, err, readFile(logPath))
		}
	}

	rep, err := milterbench.Run(context.Background(), milterbench.Options{
		Addrs: []string{fmt.Sprintf("inet:127.0.0.1:%d", ports["milter"])}, Corpus: corpus, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out, "wehr")
	if rep.Messages != 28 || rep.Errors != 0 || rep.Agree["action"] != 28 {
		t.Fatalf("corpus through make run's milter:\n%s\n%s", out.String(), readFile(logPath))
	}

	// The ops commands find the store through the config make run wrote.
	conf := filepath.Join(runDir, "wehr.yaml")
	pt := exec.Command(bin, "--config", conf, "--resolver", dns.Addr(), "--json", "policyd", "test",
		"--client-address", "192.0.2.1", "--helo", "laptop", "--sender", "a@example.org", "--recipient", "you@example.test")
	asUser(pt)
	got, err := pt.Output()
	if err != nil {
		t.Fatalf("policyd test: %v\n%s", err, got)
	}
	var d struct{ Action, Check string }
	if err := json.Unmarshal(got, &d); err != nil || !strings.HasPrefix(d.Action, "450 4.7.1 Greylisted") || d.Check != "greylist" {
		t.Fatalf("policyd test: %v %s", err, got)
	}
	gs := exec.Command(bin, "--config", conf, "--json", "greylist", "show", "192.0.2.0/24")
	asUser(gs)
	if got, err := gs.Output(); err != nil || !strings.Contains(string(got), "a@example.org") {
		t.Fatalf("greylist show after the dry run: %v %s", err, got)
	}

	if err := stop(); err != nil {
		t.Errorf("wehr serve did not stop cleanly: %v", err)
	}
	log := readFile(logPath)
	if strings.Contains(log, "level=ERROR") || !strings.Contains(log, "path="+filepath.Join(runDir, "wehr.db")) {
		t.Fatalf("serve log:\n%s", log)
	}
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
