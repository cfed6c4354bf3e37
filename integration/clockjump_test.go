//go:build clockjump

package integration

import (
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
	if err := restore(); err != nil {
		t.Fatalf("putting the clock back: %v", err)
	}
	f.mixed(w.smtpAddr(), "back", 4*time.Second)
	// Dovecot holds off new processes for a while after the clock went
	// back; Postfix keeps what it could not deliver and tries again now.
	if out, err := w.postfix.command("flush"); err != nil {
		t.Errorf("postfix flush: %v: %s", err, out)
	}
	counts := f.check(t)
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
