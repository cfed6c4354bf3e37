package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The fault matrix (issue 19), through the real Postfix of the harness:
// mail flows steadily while a fault is applied; every message must end
// delivered exactly once, or refused with a 4xx (the sender retries),
// never refused with a 5xx, never lost.
//
// TestFaultMatrix: a SERVFAIL storm for a sender's domain, DNS answers
// 5 s late, wehr (milter and policy service: one process) killed with
// SIGKILL and restarted under load, the Redis store gone for a minute.
// TestFaultPolicyServiceKilled: the policy service run alone, killed.
// TestFaultDiskFull: the embedded store's file system full. The Redis
// master killed and failed over is TestTwoMXNodes.

// faultFlows sends messages and keeps every reply, to be checked by
// check: each accepted message delivered exactly once, each 4xx never,
// no 5xx at all.
type faultFlows struct {
	grey     atomic.Int64 // greylisted senders so far
	mu       sync.Mutex
	sent     []faultSent
	sendErrs []string
}

type faultSent struct {
	phase, marker string
	reply         Reply
}

// flow sends from domain through the SMTP server at addr as client c,
// one message every pause, until stop is closed.
func (f *faultFlows) flow(addr, phase, domain string, c Client, pause time.Duration, stop chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		f.send(addr, phase, domain, c, i)
		time.Sleep(pause)
	}
}

// faultMessage is a fault test's message from a@domain to alice, its
// marker (phase, domain, number, time) in the subject, Message-ID and
// body, to find it in the mailbox.
func faultMessage(phase, domain string, i int) (marker, data string) {
	marker = fmt.Sprintf("fault-%s-%s-%d-%d", phase, domain, i, time.Now().UnixNano())
	return marker, "From: <a@" + domain + ">\r\nTo: alice@example.test\r\nSubject: " + marker + "\r\nMessage-ID: <" + marker + "@" + domain + ">\r\n\r\n" + marker + "\r\n"
}

func (f *faultFlows) send(addr, phase, domain string, c Client, i int) (string, Reply) {
	marker, data := faultMessage(phase, domain, i)
	r, err := Send(addr, c, "a@"+domain, []string{"alice@example.test"}, data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		// Postfix unreachable is not a fault we cause: say so.
		f.sendErrs = append(f.sendErrs, fmt.Sprintf("%s: %v", phase, err))
	} else {
		f.sent = append(f.sent, faultSent{phase, marker, r})
	}
	return marker, r
}

// check waits for the deliveries and returns the count per phase and
// outcome ("PHASE delivered", "PHASE 4xx").
func (f *faultFlows) check(t *testing.T) map[string]int {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sendErrs) > 0 {
		t.Errorf("SMTP errors (not replies): %v", f.sendErrs)
	}
	counts := map[string]int{}
	var ok, temp []string
	for _, s := range f.sent {
		switch {
		case s.reply.OK():
			ok = append(ok, s.marker)
			counts[s.phase+" delivered"]++
		case s.reply.Code >= 400 && s.reply.Code < 500:
			temp = append(temp, s.marker)
			counts[s.phase+" 4xx"]++
		default:
			t.Errorf("%s: %v (a fault must never cost a permanent refusal)", s.marker, s.reply)
		}
	}
	t.Logf("messages per phase and outcome: %v", counts)
	deadline := time.Now().Add(60 * time.Second)
	for _, m := range ok {
		for len(w.dovecot.Find("alice@example.test", m)) == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if n := len(w.dovecot.Find("alice@example.test", m)); n != 1 {
			t.Errorf("%s accepted but delivered %d times", m, n)
		}
	}
	for _, m := range temp {
		if n := len(w.dovecot.Find("alice@example.test", m)); n != 0 {
			t.Errorf("%s refused with 4xx but delivered %d times", m, n)
		}
	}
	return counts
}

func TestFaultMatrix(t *testing.T) {
	// Senders of their own, so that no answer cached by earlier tests
	// hides a fault: SPF passes aligned, p=reject.
	for _, d := range []string{"storm.example", "late.example", "steady.example"} {
		if err := w.dns.AddZone(fmt.Sprintf("%s. 300 IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n_dmarc.%s. 300 IN TXT \"v=DMARC1; p=reject\"\n", d, d)); err != nil {
			t.Fatal(err)
		}
	}
	var f faultFlows
	client := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}
	// phase runs the flows of domain and steady.example, one message
	// per pause each, applies fault (for a DNS fault before the flows
	// start, or the resolver's cache would answer for the fault), then
	// repairs it.
	phase := func(name, domain string, during, pause time.Duration, fault, repair func()) {
		dnsFault := domain != "steady.example"
		if dnsFault {
			fault()
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, d := range []string{domain, "steady.example"} {
			wg.Add(1)
			go f.flow(w.smtpAddr(), name, d, client, pause, stop, &wg)
		}
		time.Sleep(500 * time.Millisecond)
		if !dnsFault {
			fault()
		}
		time.Sleep(during)
		repair()
		time.Sleep(time.Second)
		close(stop)
		wg.Wait()
	}

	phase("servfail", "storm.example", 3*time.Second, 50*time.Millisecond,
		func() { w.dns.ServFail("storm.example."); w.dns.ServFail("_dmarc.storm.example.") },
		func() { w.dns.Heal("storm.example."); w.dns.Heal("_dmarc.storm.example.") })
	phase("late", "late.example", 6*time.Second, 50*time.Millisecond,
		func() { w.dns.Delay("late.example.", 5*time.Second) },
		func() { w.dns.Heal("late.example.") })
	phase("wehr-killed", "steady.example", 3*time.Second, 50*time.Millisecond,
		func() { w.wehr.Kill() },
		func() {
			if err := w.wehr.Start(); err != nil {
				t.Fatalf("restart: %v", err)
			}
		})
	// A minute without Redis: greylisting, rates, reputation and pass
	// history take their store-down fallback, and the client reconnects
	// when Redis is back. Slower flows: the minute is what counts.
	phase("redis-gone", "steady.example", time.Minute, 400*time.Millisecond,
		func() { w.redis.Stop() },
		func() {
			if err := w.redis.Restart(); err != nil {
				t.Fatalf("redis restart: %v", err)
			}
		})
	// After the minute the store is written again: the restarted Redis
	// started empty, so any key in it came from wehr since.
	deadline := time.Now().Add(15 * time.Second)
	rs := redisStore(t)
	for keys, err := rs.Scan(context.Background(), "", 1); len(keys) == 0; keys, err = rs.Scan(context.Background(), "", 1) {
		if err != nil {
			t.Fatalf("redis: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing written to Redis 15 s after it came back")
		}
		f.send(w.smtpAddr(), "redis-back", "steady.example", client, 0)
		time.Sleep(500 * time.Millisecond)
	}
	counts := f.check(t)
	for _, ph := range []string{"servfail", "late", "wehr-killed", "redis-gone"} {
		if counts[ph+" delivered"] == 0 {
			t.Errorf("phase %s: no message accepted at all", ph)
		}
	}
	if counts["wehr-killed 4xx"] == 0 {
		t.Errorf("a dead milter was not felt (Postfix's milter_default_action = tempfail gives 4xx): %v", counts)
	}
	// The storm was felt: with dmarc.on_temperror: accept (the default)
	// the storm's messages were accepted marked dmarc=temperror, which
	// a Sieve rule or a later look can tell from a pass.
	felt := false
	for _, s := range f.sent {
		if s.reply.OK() && strings.Contains(s.marker, "-storm.example-") {
			for _, d := range w.dovecot.Find("alice@example.test", s.marker) {
				felt = felt || strings.Contains(d.Data, "dmarc=temperror")
			}
		}
	}
	if !felt {
		t.Error("no message of the SERVFAIL storm says dmarc=temperror")
	}
}

// sendRetrying sends one message as an MTA would: after a 4xx it tries
// again (every wait, up to tries times), and only the last reply counts.
func (f *faultFlows) sendRetrying(addr, phase, domain string, c Client, i, tries int, wait time.Duration) {
	marker, data := faultMessage(phase, domain, i)
	f.retry(addr, phase, domain, marker, data, c, tries, wait)
}

// retry sends a message made by faultMessage as an MTA would, and keeps
// the last reply.
func (f *faultFlows) retry(addr, phase, domain, marker, data string, c Client, tries int, wait time.Duration) {
	var r Reply
	var err error
	for range tries {
		r, err = Send(addr, c, "a@"+domain, []string{"alice@example.test"}, data)
		if err != nil || r.Code < 400 || r.Code >= 500 {
			break
		}
		time.Sleep(wait)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.sendErrs = append(f.sendErrs, fmt.Sprintf("%s: %v", phase, err))
		return
	}
	f.sent = append(f.sent, faultSent{phase, marker, r})
}

// startExtraMX starts a Postfix of its own, delivering into the world's
// Dovecot, with the given milter and policy service addresses.
func startExtraMX(t *testing.T, name, milter, policy string) *Postfix {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p, err := StartPostfix(filepath.Join(w.dir, name), PostfixConfig{Hostname: name + ".example.test", SMTPPort: port,
		MilterAddr: milter, PolicyAddr: policy, LMTPPort: w.dovecot.LMTPPort, Domain: "example.test", Users: []string{"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// TestFaultPolicyServiceKilled: the policy service run alone (wehr
// policyd, Redis) is killed under load and started again. Postfix asks
// it with default_action=DUNNO, as the README says: while it is gone,
// mail goes on, checked by the milter; when it is back, Postfix asks it
// again.
func TestFaultPolicyServiceKilled(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(w.dir, "policyd-alone")
	config := fmt.Sprintf(`authserv_id: %s
hostname: %s
store:
  backend: redis
  redis:
    mode: single
    addrs: [%s]
    timeout: 200ms
policyd:
  listen: inet:127.0.0.1:%d
  local_domains: [example.test]
`, authservID, authservID, w.redis.Addr, port)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pol, err := NewWehr(filepath.Join(w.dir, "wehr"), dir, config, w.dns.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	pol.Command, pol.WaitPort = []string{"policyd"}, port
	if err := pol.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pol.Stop)
	mx := startExtraMX(t, "mx-policyd", "unix:"+w.wehr.MilterSocket, fmt.Sprintf("inet:127.0.0.1:%d", port))
	addr := fmt.Sprintf("127.0.0.1:%d", mx.SMTPPort)
	client := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}

	var f faultFlows
	run := func(phase string, d time.Duration) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(2)
		go f.flow(addr, phase, "steady.example", client, 100*time.Millisecond, stop, &wg)
		go f.flow(addr, phase, "good.example", client, 100*time.Millisecond, stop, &wg)
		time.Sleep(d)
		close(stop)
		wg.Wait()
	}
	if err := w.dns.AddZone("steady.example. 300 IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n_dmarc.steady.example. 300 IN TXT \"v=DMARC1; p=reject\"\n"); err != nil {
		t.Fatal(err)
	}
	run("policyd-up", 2*time.Second)
	pol.Kill()
	run("policyd-dead", 3*time.Second)
	mark := len(readFile(pol.Log))
	if err := pol.Start(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	run("policyd-back", 2*time.Second)

	counts := f.check(t)
	for _, ph := range []string{"policyd-up", "policyd-dead", "policyd-back"} {
		if counts[ph+" delivered"] == 0 {
			t.Errorf("phase %s: no message accepted: %v", ph, counts)
		}
	}
	if !mx.LogContains("warning:", fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("Postfix did not notice the dead policy service:\n%s", Tail(mx.Maillog(), 20))
	}
	if log := readFile(pol.Log); !strings.Contains(log[mark:], `msg="policyd: DUNNO"`) {
		t.Errorf("the restarted policy service was not asked:\n%s", Tail(pol.Log, 10))
	}
}

// TestFaultDiskFull: the file system of wehr serve's embedded store
// fills up under load. Mail goes on: the store keeps its writes in
// memory (greylisting still works: a client greylisted before or during
// the fault passes when it retries), says in the log that it cannot
// save, and saves everything once there is room again.
func TestFaultDiskFull(t *testing.T) {
	ports, err := FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(w.dir, "diskfull")
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", state).CombinedOutput(); err != nil {
		t.Fatalf("mount a small file system for the store: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", state).Run() }) //nolint:errcheck
	config := fmt.Sprintf(`authserv_id: %[1]s
hostname: %[1]s
milter:
  listen: inet:127.0.0.1:%[2]d
store:
  backend: embedded
  path: %[4]s/wehr.db
  admin_socket: %[5]s/admin.sock
policyd:
  listen: inet:127.0.0.1:%[3]d
  local_domains: [example.test]
  greylist:
    delay: 1s
`, authservID, ports[0], ports[1], state, dir)
	wehr, err := StartWehr(filepath.Join(w.dir, "wehr"), dir, config, w.dns.Addr(), ports[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wehr.Stop)
	mx := startExtraMX(t, "mx-diskfull", fmt.Sprintf("inet:127.0.0.1:%d", ports[0]), fmt.Sprintf("inet:127.0.0.1:%d", ports[1]))
	addr := fmt.Sprintf("127.0.0.1:%d", mx.SMTPPort)
	// plain.example publishes no DMARC: mail from unknown networks is
	// accepted, after greylisting (no reverse DNS: suspicious).
	if err := w.dns.AddZone(mixedZone); err != nil {
		t.Fatal(err)
	}
	var f faultFlows
	run := func(phase string, d time.Duration) { f.mixed(addr, phase, d) }
	run("room", 2*time.Second)
	fillErr := fill(filepath.Join(state, "filler"))
	if !errors.Is(fillErr, syscall.ENOSPC) {
		t.Fatalf("filling the store's file system: %v", fillErr)
	}
	mark := len(readFile(wehr.Log))
	run("full", 6*time.Second)
	log := readFile(wehr.Log)[mark:]
	if !strings.Contains(log, "cannot save to the store file") || !strings.Contains(log, "no space left on device") {
		t.Errorf("the full disk is not in the log:\n%s", Tail(wehr.Log, 10))
	}
	if err := os.Remove(filepath.Join(state, "filler")); err != nil {
		t.Fatal(err)
	}
	run("room-again", 2*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(readFile(wehr.Log)[mark:], "saving to the store file again") {
		if time.Now().After(deadline) {
			t.Fatalf("no recovery in the log:\n%s", Tail(wehr.Log, 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
	counts := f.check(t)
	for _, ph := range []string{"room", "full", "room-again"} {
		if counts[ph+" delivered"] == 0 || counts[ph+"-grey delivered"] == 0 {
			t.Errorf("phase %s: no message accepted: %v", ph, counts)
		}
		if counts[ph+"-grey 4xx"] > 0 {
			t.Errorf("phase %s: greylisted messages still refused after their retries: %v", ph, counts)
		}
	}
	for _, l := range strings.Split(readFile(wehr.Log), "\n") {
		if strings.Contains(l, "level=ERROR") && !strings.Contains(l, "cannot save to the store file") {
			t.Errorf("an error besides the full disk: %s", l)
		}
	}
}

// mixed sends for d: steady.example from its own host, passing at once,
// and a new greylisted sender every 200 ms (plain.example, no DMARC,
// each from a network of its own without reverse DNS: a new greylisting
// entry each), retrying like an MTA.
func (f *faultFlows) mixed(addr, phase string, d time.Duration) {
	good := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go f.flow(addr, phase, "steady.example", good, 50*time.Millisecond, stop, &wg)
	go func() {
		defer wg.Done()
		var gw sync.WaitGroup
		for {
			select {
			case <-stop:
				gw.Wait()
				return
			case <-time.After(200 * time.Millisecond):
			}
			n := int(f.grey.Add(1))
			c := Client{IP: fmt.Sprintf("10.%d.%d.1", n/250%250, n%250), Helo: "client.plain.example"}
			gw.Add(1)
			go func() {
				defer gw.Done()
				f.sendRetrying(addr, phase+"-grey", "plain.example", c, n, 8, 700*time.Millisecond)
			}()
		}
	}()
	time.Sleep(d)
	close(stop)
	wg.Wait()
}

// mixedZone is the DNS the mixed flows need.
const mixedZone = "plain.example. 300 IN TXT \"v=spf1 ?all\"\nsteady.example. 300 IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n_dmarc.steady.example. 300 IN TXT \"v=DMARC1; p=reject\"\n"

// fill writes zeros into path until the file system is full, and
// returns the error that stopped it.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zeros := make([]byte, 64<<10)
	for {
		if _, err := f.Write(zeros); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return err
			}
			return fmt.Errorf("write: %w", err)
		}
		if err := f.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
			return err
		}
	}
}
