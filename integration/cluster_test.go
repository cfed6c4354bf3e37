package integration

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
)

func TestStoreContractSentinel(t *testing.T) {
	s, err := storetest.StartSentinel(filepath.Join(w.dir, "contract-sentinel"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSentinel, Addrs: s.SentinelAddrs(), MasterName: s.MasterName, Prefix: "wehr:"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storetest.Run(t, func(*testing.T) store.Store { return st })
}

func TestStoreContractCluster(t *testing.T) {
	c, err := storetest.StartCluster(filepath.Join(w.dir, "contract-cluster"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeCluster, Addrs: c.Addrs(), Prefix: "wehr:"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	storetest.Run(t, func(*testing.T) store.Store { return st })
}

// node is one MX: a Postfix instance with its own wehr serve.
type node struct {
	name       string
	postfix    *Postfix
	wehr       *Wehr
	policyPort int
}

func (n *node) addr() string { return fmt.Sprintf("127.0.0.1:%d", n.postfix.SMTPPort) }

// startNodes starts two equal MX nodes sharing one Redis behind Sentinel
// and the world's Dovecot.
func startNodes(t *testing.T, s *storetest.Sentinel) []*node {
	t.Helper()
	bin := filepath.Join(w.dir, "wehr")
	var nodes []*node
	for _, name := range []string{"mxa", "mxb"} {
		dir := filepath.Join(w.dir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ports := map[string]int{}
		for _, p := range []string{"smtp", "milter", "policyd"} {
			port, err := FreePort()
			if err != nil {
				t.Fatal(err)
			}
			ports[p] = port
		}
		cfg := fmt.Sprintf(`authserv_id: %[1]s.example.test
hostname: %[1]s.example.test
log: {level: info}
dns: {timeout: 1s, attempts: 1}
milter:
  listen: inet:127.0.0.1:%[2]d
  extra_authserv_ids: [mxa.example.test, mxb.example.test]
store:
  backend: redis
  redis:
    mode: sentinel
    master_name: %[3]s
    addrs: [%[4]s]
    timeout: 200ms
policyd:
  listen: inet:127.0.0.1:%[5]d
  local_domains: [example.test]
  rates: {messages_per_ip: 100000, connections_per_ip: 2}
  dns_lists: [{zone: bl.test, weight: 5}]
  greylist: {delay: 2s, window: 1h}
`, name, ports["milter"], s.MasterName, strings.Join(s.SentinelAddrs(), ", "), ports["policyd"])
		wh, err := StartWehr(bin, dir, cfg, w.dns.Addr(), ports["milter"])
		if err != nil {
			t.Fatal(err)
		}
		pf, err := StartPostfix(filepath.Join(dir, "postfix"), PostfixConfig{
			Hostname: name + ".example.test", SMTPPort: ports["smtp"], MilterAddr: fmt.Sprintf("inet:127.0.0.1:%d", ports["milter"]),
			LMTPPort: w.dovecot.LMTPPort, Domain: "example.test", Users: []string{"alice", "bob", "carol"},
			PolicyAddr: fmt.Sprintf("inet:127.0.0.1:%d", ports["policyd"]),
		})
		if err != nil {
			wh.Stop()
			t.Fatal(err)
		}
		n := &node{name: name, postfix: pf, wehr: wh, policyPort: ports["policyd"]}
		t.Cleanup(func() { n.postfix.Stop(); n.wehr.Stop() })
		nodes = append(nodes, n)
	}
	return nodes
}

func TestTwoMXNodes(t *testing.T) {
	s, err := storetest.StartSentinel(filepath.Join(w.dir, "sentinel"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	nodes := startNodes(t, s)
	a, b := nodes[0], nodes[1]
	send := func(n *node, c Client, from, data string) Reply {
		t.Helper()
		r, err := Send(n.addr(), c, from, []string{"carol@example.test"}, data)
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		return r
	}

	t.Run("greylisting passed on A is honoured on B", func(t *testing.T) {
		data, marker := message(t, "Someone <x@shared.example>", "", "Greylisted on A, retried on B.\r\n")
		c := Client{IP: "198.51.100.150", Helo: "mail.shared.example"}
		if r := send(a, c, "x@shared.example", data); r.Code != 450 {
			t.Fatalf("A: %v", r)
		}
		time.Sleep(2100 * time.Millisecond)
		if r := send(b, c, "x@shared.example", data); !r.OK() {
			t.Fatalf("B after the delay: %v", r)
		}
		if _, err := w.dovecot.WaitMessage("carol@example.test", "INBOX", marker, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rate counters and reputation are shared", func(t *testing.T) {
		// Connections are counted when Postfix asks at CONNECT; ask
		// directly: two on A, the third on B is over the shared cap.
		ask := func(n *node) string {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.policyPort))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=198.51.100.170\ninstance=c\n\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			return strings.TrimSpace(line)
		}
		for i := range 2 {
			if a := ask(a); a != "action=DUNNO" {
				t.Fatalf("connection %d on A: %s", i+1, a)
			}
		}
		if got := ask(b); !strings.HasPrefix(got, "action=450 4.7.1 Too many connections from [198.51.100.170]") {
			t.Fatalf("third connection, on B: %s", got)
		}
		// A refusal on A is in the reputation B reads.
		data, _ := message(t, "Spam <s@spam.example>", "", "Spam.\r\n")
		if r := send(a, Client{IP: "203.0.113.66", Helo: "mail.spam.example"}, "s@spam.example", data); r.Code != 554 {
			t.Fatalf("listed client on A: %v", r)
		}
		out, err := exec.Command(w.wehr.Bin, "--config", b.wehr.Config, "reputation", "show", "203.0.113.66").CombinedOutput()
		if err != nil || string(out) != "203.0.113.66: passed 0, refused 1\nnetwork 203.0.113.0/24: passed 0, refused 1\n" {
			t.Fatalf("reputation from B: %s %v", out, err)
		}
	})

	t.Run("DMARC report rows of both nodes add up", func(t *testing.T) {
		data, _ := message(t, "CEO <ceo@bank.example>", "", "Pay now.\r\n")
		for _, n := range []*node{a, b, a} {
			if r := send(n, Client{IP: "203.0.113.5", Name: "mail.evil.example", Helo: "mail.evil.example"}, "x@rows.evil.example", data); r.Code != 550 {
				t.Fatalf("%s: %v", n.name, r)
			}
		}
		st, err := store.OpenRedis(store.RedisConfig{Mode: "sentinel", MasterName: s.MasterName, Addrs: s.SentinelAddrs(), Prefix: "wehr:", Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var rows []store.StoredRow
		for i := 0; ; i++ {
			rows, err = store.NewReportRows(st).Rows(context.Background(), "bank.example", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
			if err == nil && len(rows) == 1 && rows[0].Count == 3 {
				break
			}
			if i > 100 {
				t.Fatalf("rows %+v %v", rows, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if def := string(rows[0].Def); !strings.Contains(def, `"disposition":"reject"`) || !strings.Contains(def, `"envelope_from":"rows.evil.example"`) {
			t.Fatalf("row %s", def)
		}
	})

	t.Run("Redis master killed under steady traffic", func(t *testing.T) {
		good := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}
		type sent struct {
			marker string
			r      Reply
		}
		var mu sync.Mutex
		var results []sent
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					data, marker := message(t, "News <news@good.example>", "", fmt.Sprintf("Steady %d/%d.\r\n", i, k))
					data = w.sign(t, data, "good.example", "sel")
					r, err := Send(n.addr(), good, "bounce@good.example", []string{"carol@example.test"}, data)
					if err != nil {
						r = Reply{Stage: "NET", Code: 0, Text: err.Error()}
					}
					mu.Lock()
					results = append(results, sent{marker, r})
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		time.Sleep(time.Second)
		old := s.CurrentMaster()
		s.Master.Stop() // kill -9
		newMaster, err := s.WaitFailover(old, 15*time.Second)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		close(stop)
		wg.Wait()
		t.Logf("failover %s -> %s; %d messages sent", old, newMaster, len(results))
		ok := 0
		for _, x := range results {
			if x.r.Code >= 500 {
				t.Errorf("%s got %v", x.marker, x.r)
			}
			if x.r.OK() {
				ok++
			}
		}
		if ok < len(results)/2 {
			t.Errorf("only %d of %d accepted", ok, len(results))
		}
		// Every accepted message is in the mailbox exactly once.
		time.Sleep(500 * time.Millisecond)
		for _, x := range results {
			if !x.r.OK() {
				continue
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				n := len(w.dovecot.Find("carol@example.test", x.marker))
				if n == 1 {
					break
				}
				if n > 1 || time.Now().After(deadline) {
					t.Fatalf("%s delivered %d times", x.marker, n)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		// Both nodes use the new master, without a restart: greylisting
		// (which needs the store) works on each.
		for i, n := range nodes {
			data, _ := message(t, "Someone <y@after.example>", "", "After the failover.\r\n")
			c := Client{IP: fmt.Sprintf("198.51.100.%d", 160+i), Helo: "mail.after.example"}
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := send(n, c, "y@after.example", data)
				if r.Code == 450 && strings.Contains(r.Text, "Greylisted") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s does not use the new master: %v", n.name, r)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	})

	t.Run("one node's wehr down", func(t *testing.T) {
		a.wehr.Kill()
		defer func() {
			if err := a.wehr.Start(); err != nil {
				t.Fatal(err)
			}
		}()
		data, marker := message(t, "News <news@good.example>", "", "Node A is down.\r\n")
		data = w.sign(t, data, "good.example", "sel")
		good := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}
		if r := send(a, good, "bounce@good.example", data); r.Code < 400 || r.Code >= 500 {
			t.Fatalf("A with wehr down: %v, want a 4xx", r)
		}
		start := time.Now()
		if r := send(b, good, "bounce@good.example", data); !r.OK() {
			t.Fatalf("B: %v", r)
		}
		// B does not wait for A: a generous bound, not a benchmark.
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("B took %v", d)
		}
		if _, err := w.dovecot.WaitMessage("carol@example.test", "INBOX", marker, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}
