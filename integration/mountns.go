package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/wehr/wehr/resolver/dnstest"
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

// ResolverNamespace starts a test DNS server on port 53 of ip (a
// loopback address nothing else uses: resolv.conf has no ports) and a
// mount namespace whose /etc/resolv.conf names it, with glibc's "options
// trust-ad" when trustAD (programs then take its AD bit as DNSSEC
// validation). Programs started through the namespace's Via resolve
// through the test DNS; the machine's resolv.conf is not touched.
func ResolverNamespace(dir, ip string, trustAD bool) (*dnstest.Server, *MountNamespace, error) {
	dns, err := dnstest.StartAt(ip+":53", "")
	if err != nil {
		return nil, nil, fmt.Errorf("a test resolver on %s:53: %w", ip, err)
	}
	conf := "nameserver " + ip + "\n"
	if trustAD {
		conf += "options trust-ad\n"
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		dns.Close()
		return nil, nil, err
	}
	ns, err := NewMountNamespace(map[string]string{path: "/etc/resolv.conf"})
	if err != nil {
		dns.Close()
		return nil, nil, err
	}
	return dns, ns, nil
}
