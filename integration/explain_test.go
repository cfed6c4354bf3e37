package integration

import (
	"strings"
	"testing"
	"time"
)

// wehr explain on the real log of messages through the real Postfix: a
// spoof refused at end of data, found by its Message-ID, and a good
// message found by the queue id Postfix gave it.
func TestExplain(t *testing.T) {
	data, marker := message(t, "CEO <ceo@bank.example>", "", "Pay now.\r\n")
	r := w.send(t, Client{IP: "203.0.113.5", Name: "mail.evil.example", Helo: "mail.evil.example"}, "x@evil.example", data)
	if r.Code != 550 {
		t.Fatalf("spoof: %v", r)
	}
	good, _ := message(t, "Alice <a@good.example>", "", "Hello.\r\n")
	rg := w.send(t, Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}, "bounce@good.example", w.sign(t, good, "good.example", "sel"))
	if !rg.OK() {
		t.Fatalf("good: %v", rg)
	}
	time.Sleep(200 * time.Millisecond) // the log lines are written
	cfg := emptyCfg(t)
	out, err := wehrCmd(t, cfg, "explain", "<"+marker+"@test>", "--log", w.wehr.Log)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"Message ", "<" + marker + "@test>", "the milter refused it: 550 5.7.1", "Why: DMARC fail for bank.example (policy reject",
		"at RCPT for alice@example.test (client 203.0.113.5"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q:\n%s", want, out)
		}
	}
	out, err = wehrCmd(t, cfg, "explain", rg.QueueID(), "--log", w.wehr.Log)
	if err != nil || !strings.Contains(out, "Message "+rg.QueueID()) || !strings.Contains(out, "the milter accepted it") || !strings.Contains(out, "DMARC pass for good.example") {
		t.Errorf("good message %s: %v\n%s", rg.QueueID(), err, out)
	}
}
