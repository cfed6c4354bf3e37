package storetest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Sentinel is a Redis master, a replica and three Sentinels on loopback,
// set to fail over in about two seconds.
type Sentinel struct {
	Master, Replica *Redis
	Sentinels       []*Redis
	MasterName      string
}

// SentinelAddrs lists the Sentinels' addresses.
func (s *Sentinel) SentinelAddrs() []string {
	var out []string
	for _, r := range s.Sentinels {
		out = append(out, r.Addr)
	}
	return out
}

// StartSentinel starts the group in dir and waits until the Sentinels see
// each other (about 2 s: they say hello every 2 s).
func StartSentinel(dir string) (*Sentinel, error) {
	s := &Sentinel{MasterName: "wehrmaster"}
	var err error
	if s.Master, err = NewRedis(filepath.Join(dir, "master"), "repl-diskless-sync-delay 0"); err != nil {
		return nil, err
	}
	if s.Replica, err = NewRedis(filepath.Join(dir, "replica"), "repl-diskless-sync-delay 0\nreplicaof "+strings.Replace(s.Master.Addr, ":", " ", 1)); err != nil {
		s.Stop()
		return nil, err
	}
	bin, _ := exec.LookPath("redis-server")
	for i := range 3 {
		conf := fmt.Sprintf("sentinel monitor %s %s 2\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 1",
			s.MasterName, strings.Replace(s.Master.Addr, ":", " ", 1), s.MasterName, s.MasterName, s.MasterName)
		r, err := startRedisArgs(bin, filepath.Join(dir, fmt.Sprintf("sentinel%d", i)), conf, "--sentinel")
		if err != nil {
			s.Stop()
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, r)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok := true
		for _, r := range s.Sentinels {
			out, _ := cli(r.Addr, "SENTINEL", "master", s.MasterName)
			if !strings.Contains(out, "num-other-sentinels\n2") {
				ok = false
			}
		}
		if ok {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("sentinels did not find each other")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CurrentMaster asks a Sentinel which address is the master.
func (s *Sentinel) CurrentMaster() string {
	for _, r := range s.Sentinels {
		out, err := cli(r.Addr, "SENTINEL", "get-master-addr-by-name", s.MasterName)
		if err == nil {
			f := strings.Fields(out)
			if len(f) == 2 {
				return f[0] + ":" + f[1]
			}
		}
	}
	return ""
}

// WaitFailover waits until the Sentinels name another master than old.
func (s *Sentinel) WaitFailover(old string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := s.CurrentMaster(); m != "" && m != old {
			return m, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("no failover within %v", timeout)
}

// Stop stops everything.
func (s *Sentinel) Stop() {
	for _, r := range append([]*Redis{s.Master, s.Replica}, s.Sentinels...) {
		if r != nil {
			r.Stop()
		}
	}
}

// Cluster is a Redis Cluster of three masters on loopback.
type Cluster struct {
	Nodes []*Redis
}

// Addrs lists the nodes.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, r := range c.Nodes {
		out = append(out, r.Addr)
	}
	return out
}

// StartCluster starts three nodes in dir, makes them a cluster with
// redis-cli --cluster create and waits for cluster_state:ok.
func StartCluster(dir string) (*Cluster, error) {
	c := &Cluster{}
	for i := range 3 {
		r, err := NewRedis(filepath.Join(dir, fmt.Sprintf("node%d", i)), "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000")
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, r)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, r := range c.Nodes {
			out, _ := cli(r.Addr, "CLUSTER", "INFO")
			if !strings.Contains(out, "cluster_state:ok") {
				ok = false
			}
		}
		if ok {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("cluster not ok after 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, r := range c.Nodes {
		r.Stop()
	}
}

func cli(addr string, args ...string) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).Output()
	return string(out), err
}
