//go:build clockjump

package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClockJump sets the system clock an hour forward, then back, while
// mail flows through Postfix, wehr, Redis and Dovecot (the fault matrix
// of issue 19). It changes the clock of the whole machine, so make test
// runs it alone, after everything else (-tags clockjump), and it puts
// the clock back from the monotonic clock, which does not jump, however
// it ends.
//
// Every message must end delivered exactly once or refused with 4xx;
// a sender greylisted while the clock was ahead must pass one delay
// after it comes back (not an hour later); wehr keeps serving.
func TestClockJump(t *testing.T) {
	start := time.Now()
	set := func(at time.Time) error {
		tv := syscall.NsecToTimeval(at.UnixNano())
		return syscall.Settimeofday(&tv)
	}
	// time.Since reads the monotonic clock: start plus it is the true
	// time, whatever the wall clock says now.
	restore := func() error { return set(start.Add(time.Since(start))) }
	defer func() {
		if err := restore(); err != nil {
			t.Errorf("putting the clock back: %v", err)
		}
	}()
	if err := w.dns.AddZone(mixedZone); err != nil {
		t.Fatal(err)
	}
	mark := logMark()
	var f faultFlows
	f.mixed(w.smtpAddr(), "before", 2*time.Second)
	if err := set(time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("setting the clock an hour forward (needs root): %v", err)
	}
	f.mixed(w.smtpAddr(), "ahead", 3*time.Second)
	// Senders greylisted while the clock is ahead, retrying once it is
	// back: their first attempts are an hour in the future.
	type pending struct {
		c            Client
		marker, data string
	}
	var jumped []pending
	for i := range 5 {
		c := Client{IP: fmt.Sprintf("10.251.%d.1", i), Helo: "client.plain.example"}
		marker, data := faultMessage("jumped-grey", "plain.example", i)
		r, err := Send(w.smtpAddr(), c, "a@plain.example", []string{"alice@example.test"}, data)
		if err != nil || r.Code != 450 {
			t.Fatalf("a new sender while ahead: %v %v, want greylisted (450)", r, err)
		}
		jumped = append(jumped, pending{c, marker, data})
	}
	if err := restore(); err != nil {
		t.Fatalf("putting the clock back: %v", err)
	}
	// Retried like an MTA, they pass one greylisting delay (2 s here)
	// after the clock came back, not an hour later.
	for _, p := range jumped {
		f.retry(w.smtpAddr(), "jumped-grey", "plain.example", p.marker, p.data, p.c, 8, 700*time.Millisecond)
	}
	f.mixed(w.smtpAddr(), "back", 4*time.Second)
	// Dovecot's LMTP processes end themselves when the clock goes back,
	// and its master starts no new ones for 3 minutes: restarted, as an
	// admin would. Postfix kept what it could not deliver meanwhile, and
	// tries again now.
	if err := w.dovecot.Restart(); err != nil {
		t.Fatal(err)
	}
	if out, err := w.postfix.command("flush"); err != nil {
		t.Errorf("postfix flush: %v: %s", err, out)
	}
	counts := f.check(t)
	if counts["jumped-grey delivered"] != len(jumped) {
		t.Errorf("senders greylisted while the clock was ahead: %d of %d passed after it came back: %v", counts["jumped-grey delivered"], len(jumped), counts)
	}
	for _, ph := range []string{"before", "ahead", "back"} {
		if counts[ph+" delivered"] == 0 || counts[ph+"-grey delivered"] == 0 {
			t.Errorf("phase %s: no message accepted: %v", ph, counts)
		}
		if counts[ph+"-grey 4xx"] > 0 {
			t.Errorf("phase %s: greylisted senders still refused after 8 retries (waiting for the clock to catch up?): %v", ph, counts)
		}
	}
	if log := readFile(w.wehr.Log)[mark:]; strings.Contains(log, "level=ERROR") {
		t.Errorf("wehr logged errors while the clock jumped:\n%s", Tail(w.wehr.Log, 20))
	}
}
