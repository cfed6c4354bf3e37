package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The policy service through Postfix's check_policy_service at RCPT.

func TestPolicyListedClientRefused(t *testing.T) {
	data, _ := message(t, "Someone <a@spam.example>", "", "Buy now.\r\n")
	mark := logMark()
	r := w.send(t, Client{IP: "203.0.113.66", Helo: "mail.spam.example"}, "a@spam.example", data)
	want := "5.7.1 <alice@example.test>: Recipient address rejected: Service unavailable; client [203.0.113.66] is listed on bl.test (127.0.0.2)"
	if r.Stage != "RCPT" || r.Code != 554 || r.Text != want {
		t.Fatalf("%v\nwant RCPT: 554 %s", r, want)
	}
	// Refused at RCPT, the message never reached DATA: what remains to
	// check is that the decision is logged with its check.
	waitLog(t, mark, `msg="policyd: 554"`, "client=203.0.113.66", "check=dnsbl")
}

func TestPolicyGreylisting(t *testing.T) {
	data, marker := message(t, "Someone <a@new.example>", "", "First contact.\r\n")
	c := Client{IP: "198.51.100.200", Helo: "mail.new.example"} // no reverse DNS: suspicious
	r := w.send(t, c, "prvs=0001=a@new.example", data)
	if r.Stage != "RCPT" || r.Code != 450 || !strings.HasSuffix(r.Text, "Greylisted: please retry in 2 seconds") {
		t.Fatalf("first attempt: %v", r)
	}
	time.Sleep(2100 * time.Millisecond)
	// The retry carries another BATV tag, as real retries do.
	r = w.send(t, c, "prvs=0002=a@new.example", data)
	if !r.OK() {
		t.Fatalf("retry after the delay: %v", r)
	}
	if _, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyCleanClientUntouched(t *testing.T) {
	data, marker := message(t, "News <news@good.example>", "", "Clean.\r\n")
	data = w.sign(t, data, "good.example", "sel")
	mark := logMark()
	r := w.send(t, Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}, "bounce@good.example", data)
	if !r.OK() {
		t.Fatalf("clean client: %v", r)
	}
	if _, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitLog(t, mark, `msg="policyd: DUNNO"`, "client=192.0.2.10")
}

// Redis down: checks that need the store answer DUNNO and mail flows;
// Redis back: the store is used again, without a restart.
func TestPolicyRedisDown(t *testing.T) {
	w.redis.Stop()
	restarted := false
	defer func() {
		if !restarted {
			w.redis.Restart() //nolint:errcheck
		}
	}()
	data, marker := message(t, "Someone <b@new.example>", "", "While Redis is down.\r\n")
	mark := logMark()
	r := w.send(t, Client{IP: "198.51.100.201", Helo: "mail.new.example"}, "b@new.example", data)
	if !r.OK() {
		t.Fatalf("with Redis down: %v", r)
	}
	if _, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitLog(t, mark, "store unavailable")
	if err := w.redis.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	data, _ = message(t, "Someone <c@new.example>", "", "Redis is back.\r\n")
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = w.send(t, Client{IP: "198.51.100.202", Helo: "mail.new.example"}, "c@new.example", data)
		if r.Code == 450 && strings.Contains(r.Text, "Greylisted") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("greylisting did not come back with Redis: %v", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A client on this host (policyd.skip_networks, loopback by default) meets
// none of the MX checks: HELO "laptop" without reverse DNS is accepted,
// and the log says why.
func TestPolicyLoopbackSkipped(t *testing.T) {
	data, marker := message(t, "Someone <a@new.example>", "", "From this host.\r\n")
	mark := logMark()
	r := w.send(t, Client{Helo: "laptop"}, "a@new.example", data)
	if !r.OK() {
		t.Fatalf("loopback client: %v", r)
	}
	if _, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitLog(t, mark, `msg="policyd: DUNNO"`, "helo=laptop", `checks="context: client in skip_networks 127.0.0.0/8"`)
}

// The README's way to try the MX checks from the MX itself: its swaks
// command, verbatim but for the port and the recipient, gets greylisted.
func TestPolicyREADMEXclientRecipe(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(l, "swaks ") && strings.Contains(l, "--xclient-addr") {
			line = l
		}
	}
	if line == "" {
		t.Fatal("README.md: no swaks command with --xclient-addr")
	}
	args := strings.Fields(line)[1:]
	for i, a := range args {
		switch {
		case a == "--port":
			args[i+1] = fmt.Sprint(w.postfix.SMTPPort)
		case a == "--to":
			args[i+1] = "alice@example.test"
		}
	}
	out, _ := exec.Command("swaks", args...).CombinedOutput()
	if !strings.Contains(string(out), "450 4.7.1 <alice@example.test>: Recipient address rejected: Greylisted: please retry in 2 seconds") {
		t.Fatalf("swaks %s:\n%s", strings.Join(args, " "), out)
	}
}
