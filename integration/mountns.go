package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// MountNamespace is a private mount namespace held open by a sleeping
// process; commands run in it through Via (nsenter). The tests use it to
// give real programs their own /etc/resolv.conf or /etc/postfix without
// touching the machine's.
type MountNamespace struct {
	holder *exec.Cmd
	Via    []string
}

// NewMountNamespace makes the namespace and bind-mounts each source
// over its target in it.
func NewMountNamespace(binds map[string]string) (*MountNamespace, error) {
	holder := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "7200")
	if err := holder.Start(); err != nil {
		return nil, fmt.Errorf("unshare: %w", err)
	}
	ns := &MountNamespace{holder: holder, Via: []string{"nsenter", "-t", strconv.Itoa(holder.Process.Pid), "-m"}}
	// unshare has made the namespace once the holder's differs from ours.
	deadline := time.Now().Add(5 * time.Second)
	for {
		l1, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid))
		l0, _ := os.Readlink("/proc/self/ns/mnt")
		if l1 != "" && l1 != l0 {
			break
		}
		if time.Now().After(deadline) {
			ns.Close()
			return nil, fmt.Errorf("unshare made no mount namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for from, to := range binds {
		if out, err := ns.Run("mount", "--bind", from, to); err != nil {
			ns.Close()
			return nil, fmt.Errorf("mount --bind %s %s: %v %s", from, to, err, out)
		}
	}
	return ns, nil
}

// Run runs a command in the namespace.
func (ns *MountNamespace) Run(args ...string) (string, error) {
	argv := append(append([]string{}, ns.Via...), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// Close ends the holder; the namespace goes with the last process in it.
func (ns *MountNamespace) Close() {
	ns.holder.Process.Kill() //nolint:errcheck
	ns.holder.Wait()         //nolint:errcheck
}
