package integration

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// The fault matrix (issue 19), through the real Postfix of the harness:
// mail flows steadily from two senders while a fault is applied; every
// message must end delivered exactly once, or refused with a 4xx (the
// sender retries), never refused with a 5xx, never lost.
//
// The faults: a SERVFAIL storm for a sender's domain, DNS answers 5 s
// late, wehr (milter and policy service: one process) killed with
// SIGKILL and restarted under load, the Redis store gone for 10 s. The
// Redis master killed and failed over is TestTwoMXNodes; the embedded
// store's disk full is in store's TestWritebackFailingCommits (commits
// fail, writes wait in memory, then are refused as "store unavailable",
// which the daemons treat as on_store_error says).
func TestFaultMatrix(t *testing.T) {
	// Senders of their own, so that no answer cached by earlier tests
	// hides a fault: SPF passes aligned, p=reject.
	for _, d := range []string{"storm.example", "late.example", "steady.example"} {
		if err := w.dns.AddZone(fmt.Sprintf("%s. 300 IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n_dmarc.%s. 300 IN TXT \"v=DMARC1; p=reject\"\n", d, d)); err != nil {
			t.Fatal(err)
		}
	}
	type sent struct {
		marker string
		reply  Reply
	}
	var mu sync.Mutex
	var all []sent
	var sendErrs []string
	client := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}
	// flow sends from domain until stop is closed, one message at a time.
	flow := func(phase, domain string, stop chan struct{}, wg *sync.WaitGroup) {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			marker := fmt.Sprintf("fault-%s-%s-%d-%d", phase, domain, i, time.Now().UnixNano())
			data := "From: <a@" + domain + ">\r\nTo: alice@example.test\r\nSubject: " + marker + "\r\nMessage-ID: <" + marker + "@" + domain + ">\r\n\r\n" + marker + "\r\n"
			r, err := Send(w.smtpAddr(), client, "a@"+domain, []string{"alice@example.test"}, data)
			mu.Lock()
			if err != nil {
				// Postfix unreachable is not a fault we cause: say so.
				sendErrs = append(sendErrs, fmt.Sprintf("%s: %v", phase, err))
			} else {
				all = append(all, sent{marker, r})
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}
	// phase runs the flows of domain and steady.example, applies fault
	// (for a DNS fault before the flows start, or the resolver's cache
	// would answer for the fault), then repairs it.
	phase := func(name, domain string, during time.Duration, fault, repair func()) {
		dnsFault := domain != "steady.example"
		if dnsFault {
			fault()
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, d := range []string{domain, "steady.example"} {
			wg.Add(1)
			go flow(name, d, stop, &wg)
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

	phase("servfail", "storm.example", 3*time.Second,
		func() { w.dns.ServFail("storm.example."); w.dns.ServFail("_dmarc.storm.example.") },
		func() { w.dns.Heal("storm.example."); w.dns.Heal("_dmarc.storm.example.") })
	phase("late", "late.example", 6*time.Second,
		func() { w.dns.Delay("late.example.", 5*time.Second) },
		func() { w.dns.Heal("late.example.") })
	phase("wehr-killed", "steady.example", 3*time.Second,
		func() { w.wehr.Kill() },
		func() {
			if err := w.wehr.Start(); err != nil {
				t.Fatalf("restart: %v", err)
			}
		})
	phase("redis-gone", "steady.example", 10*time.Second,
		func() { w.redis.Stop() },
		func() {
			if err := w.redis.Restart(); err != nil {
				t.Fatalf("redis restart: %v", err)
			}
		})

	if len(sendErrs) > 0 {
		t.Errorf("SMTP errors (not replies): %v", sendErrs)
	}
	// Count and wait for the deliveries.
	counts := map[string]int{}
	var ok, temp []string
	for _, s := range all {
		ph := strings.SplitN(s.marker, "-", 3)[1]
		switch {
		case s.reply.OK():
			ok = append(ok, s.marker)
			counts[ph+" delivered"]++
		case s.reply.Code >= 400 && s.reply.Code < 500:
			temp = append(temp, s.marker)
			counts[ph+" 4xx"]++
		default:
			t.Errorf("%s: %v (a fault must never cost a permanent refusal)", s.marker, s.reply)
		}
	}
	t.Logf("messages per phase and outcome: %v", counts)
	for _, ph := range []string{"servfail", "late", "wehr", "redis"} {
		if counts[ph+" delivered"] == 0 {
			t.Errorf("phase %s: no message accepted at all", ph)
		}
	}
	if counts["wehr 4xx"] == 0 {
		t.Errorf("a dead milter was not felt (Postfix's milter_default_action = tempfail gives 4xx): %v", counts)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, m := range ok {
		for len(w.dovecot.Find("alice@example.test", m)) == 0 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if n := len(w.dovecot.Find("alice@example.test", m)); n != 1 {
			t.Errorf("%s accepted but delivered %d times", m, n)
		}
	}
	// The storm was felt: with dmarc.on_temperror: accept (the default)
	// the storm's messages were accepted marked dmarc=temperror, which
	// a Sieve rule or a later look can tell from a pass.
	felt := false
	for _, m := range ok {
		if strings.Contains(m, "-storm.example-") {
			for _, d := range w.dovecot.Find("alice@example.test", m) {
				felt = felt || strings.Contains(d.Data, "dmarc=temperror")
			}
		}
	}
	if !felt {
		t.Error("no message of the SERVFAIL storm says dmarc=temperror")
	}
	for _, m := range temp {
		if n := len(w.dovecot.Find("alice@example.test", m)); n != 0 {
			t.Errorf("%s refused with 4xx but delivered %d times", m, n)
		}
	}
}
