package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// BuildWehr builds the wehr binary into dir from the module's cmd/wehr.
func BuildWehr(dir string) (string, error) {
	bin := filepath.Join(dir, "wehr")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/wehr/wehr/cmd/wehr")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Wehr is a running `wehr serve`.
type Wehr struct {
	Bin        string
	Config     string
	Resolver   string
	MilterPort int
	// MilterSocket, if set, is the unix socket the milter listens on
	// (then MilterPort is 0).
	MilterSocket string
	Log          string
	// NoFile, if set, is the open-file limit (soft and hard) the
	// process runs with.
	NoFile int
	// Command, if set, is what runs instead of serve (e.g. policyd),
	// and WaitPort the TCP port Start waits on for it.
	Command  []string
	WaitPort int
	cmd      *exec.Cmd
	done     chan struct{}
}

// StartWehr writes the config into dir and starts `wehr serve`.
func StartWehr(bin, dir, config, resolver string, milterPort int) (*Wehr, error) {
	w, err := NewWehr(bin, dir, config, resolver, milterPort)
	if err != nil {
		return nil, err
	}
	return w, w.Start()
}

// NewWehr writes the config into dir; Start starts it.
func NewWehr(bin, dir, config, resolver string, milterPort int) (*Wehr, error) {
	w := &Wehr{Bin: bin, Config: filepath.Join(dir, "wehr.yaml"), Resolver: resolver, MilterPort: milterPort, Log: filepath.Join(dir, "wehr.log")}
	return w, writeFile(w.Config, config, 0o644)
}

// Start starts the process (again).
func (w *Wehr) Start() error {
	logf, err := os.OpenFile(w.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"--config", w.Config, "--resolver", w.Resolver}, w.Command...)
	if w.Command == nil {
		args = append(args, "serve")
	}
	cmd := exec.Command(w.Bin, args...)
	if w.NoFile > 0 {
		cmd = exec.Command("/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, w.NoFile), w.Bin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close()
	w.cmd = cmd
	w.done = make(chan struct{})
	go func() { cmd.Wait(); close(w.done) }() //nolint:errcheck
	wait := func() error { return WaitListening(w.MilterPort, 10*time.Second) }
	if w.WaitPort != 0 {
		wait = func() error { return WaitListening(w.WaitPort, 10*time.Second) }
	} else if w.MilterSocket != "" {
		wait = func() error { return WaitSocket(w.MilterSocket, 10*time.Second) }
	}
	if err := wait(); err != nil {
		w.Kill()
		return fmt.Errorf("wehr: %w\n%s", err, Tail(w.Log, 20))
	}
	return nil
}

// WaitSocket waits until something accepts connections on a unix socket.
func WaitSocket(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s after %v", path, timeout)
}

// Kill ends the process at once, as a crash would.
func (w *Wehr) Kill() {
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	<-w.done
	w.cmd = nil
}

// Signal sends the process a signal.
func (w *Wehr) Signal(sig os.Signal) error {
	if w.cmd == nil {
		return fmt.Errorf("wehr is not running")
	}
	return w.cmd.Process.Signal(sig)
}

// Stop asks the process to stop and waits.
func (w *Wehr) Stop() {
	if w.cmd == nil {
		return
	}
	w.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		w.Kill()
	}
	w.cmd = nil
}
