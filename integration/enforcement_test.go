package integration

import (
	"os"
	"strings"
	"testing"
	"time"
)

// The README's "two defaults to choose deliberately", both values,
// through Postfix: dmarc.on_temperror and dkim.unauthorized_sender.
func TestTheOtherValueOfTwoDefaults(t *testing.T) {
	if err := w.dns.AddZone("flaky.example. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n"); err != nil {
		t.Fatal(err)
	}
	w.dns.ServFail("_dmarc.flaky.example")
	flaky := func() (Reply, string) {
		data, marker := message(t, "CEO <ceo@flaky.example>", "", "Pay now.\r\n")
		return w.send(t, forger, "x@evil.example", data), marker
	}
	asCarol := func() Reply {
		data, _ := message(t, "Carol <carol@example.test>", "", "Not alice's address.\r\n")
		data = strings.Replace(data, "To: alice@example.test", "To: bob@example.test", 1)
		client := Client{IP: "198.51.100.77", Name: "[UNAVAILABLE]", Helo: "alice-laptop", AuthUser: "alice@example.test", AuthPass: "alicepw"}
		r, err := Send(w.submissionAddr(), client, "alice@example.test", []string{"bob@example.test"}, data)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// The defaults: accepted, the header says temperror; unsigned.
	r, marker := flaky()
	if !r.OK() {
		t.Fatalf("on_temperror: accept: %v", r)
	}
	m, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ar := strings.Join(ours(header(m.Data, "Authentication-Results")), "\n"); !strings.Contains(ar, "dmarc=temperror") {
		t.Fatalf("on_temperror: accept: A-R %q", ar)
	}
	if r := asCarol(); !r.OK() {
		t.Fatalf("unauthorized_sender: unsigned: %v", r)
	}

	// The other values, by reload.
	orig := readFile(w.wehr.Config)
	defer func() {
		os.WriteFile(w.wehr.Config, []byte(orig), 0o644) //nolint:errcheck
		sighup(t, "configuration reloaded")
	}()
	changed := strings.Replace(orig, "dkim:\n", "dkim:\n  unauthorized_sender: refuse\n", 1) + "dmarc:\n  on_temperror: tempfail\n"
	if err := os.WriteFile(w.wehr.Config, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	sighup(t, "configuration reloaded")
	mark := logMark()
	r, _ = flaky()
	if r.Stage != "END" || r.Code != 451 || !strings.HasPrefix(r.Text, "4.7.5 ") {
		t.Fatalf("on_temperror: tempfail: %v", r)
	}
	want := "5.7.1 user alice@example.test may not send as <carol@example.test>; use an address of your own"
	if r := asCarol(); r.Stage != "END" || r.Code != 553 || r.Text != want {
		t.Fatalf("unauthorized_sender: refuse: %v\nwant END: 553 %s", r, want)
	}
	waitLog(t, mark, `msg="milter: refused"`, "from_domain=flaky.example", `reply="451 4.7.5`)
}
