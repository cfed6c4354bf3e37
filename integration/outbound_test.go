package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
)

// pythonVerifier checks every DKIM signature of a message with dkimpy
// (Debian's python3-dkim; python3-nacl for Ed25519), against the TXT
// records given in a JSON file, and prints a JSON list of results.
const pythonVerifier = `import sys, json, re, dkim
records = json.load(open(sys.argv[1]))
msg = open(sys.argv[2], 'rb').read().replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
def dnsfunc(name, timeout=5):
    v = records.get(name.decode().rstrip('.').lower())
    return v.encode() if v else None
head = msg.split(b'\r\n\r\n', 1)[0]
n = len(re.findall(rb'(?im)^dkim-signature:', head))
d = dkim.DKIM(msg)
print(json.dumps([bool(d.verify(idx=i, dnsfunc=dnsfunc)) for i in range(n)]))
`

// aliceToBob submits a message from alice (SASL) to bob with the given
// From header, and returns it as Dovecot delivered it, with its marker
// (its Subject).
func aliceToBob(t *testing.T, from, body string) (Message, string) {
	t.Helper()
	data, marker := message(t, from, "", body)
	data = strings.Replace(data, "To: alice@example.test", "To: bob@example.test", 1)
	client := Client{IP: "198.51.100.77", Name: "[UNAVAILABLE]", Helo: "alice-laptop", AuthUser: "alice@example.test", AuthPass: "alicepw"}
	if r, err := Send(w.submissionAddr(), client, "alice@example.test", []string{"bob@example.test"}, data); err != nil || !r.OK() {
		t.Fatalf("submission: %v %v", r, err)
	}
	m, err := w.dovecot.WaitMessage("bob@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return m, marker
}

func TestSubmissionSigned(t *testing.T) {
	m, marker := aliceToBob(t, "Alice <alice@example.test>", "Hello Bob, signed by wehr.\r\n")
	sigs := header(m.Data, "DKIM-Signature")
	if len(sigs) != 2 || !strings.Contains(sigs[0], "a=rsa-sha256") || !strings.Contains(sigs[1], "a=ed25519-sha256") ||
		!strings.Contains(sigs[0], "d=example.test") {
		t.Fatalf("signatures %q", sigs)
	}
	// Outbound mail is not verified as inbound: no A-R of ours.
	if len(ours(header(m.Data, "Authentication-Results"))) != 0 {
		t.Error("outbound mail got an inbound A-R")
	}

	// Our own engine verifies both.
	res, err := resolver.New(resolver.Config{Servers: []string{w.dns.Addr()}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v, err := mailauth.NewEngine(res, mailauth.Config{AuthservID: "check"}).Verify(context.Background(), mailauth.Envelope{}, bytes.NewReader([]byte(m.Data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(v.DKIM) != 2 || v.DKIM[0].Result != "pass" || v.DKIM[1].Result != "pass" || v.DMARC.Result != "pass" || !v.DMARC.DKIMAligned {
		t.Fatalf("our verifier: %+v", v.DKIM)
	}

	// And so does an independent one.
	records := map[string]string{}
	for _, sel := range []string{"2026a-rsa", "2026a-ed"} {
		name := sel + "._domainkey.example.test"
		if txt, err := res.LookupTXT(context.Background(), name); err == nil {
			records[name] = txt[0]
		}
	}
	if len(records) != 2 {
		t.Fatalf("key records %v", records)
	}
	got := runPython(t, records, m.Data)
	if got != "[true, true]" {
		t.Fatalf("dkimpy says %s", got)
	}
	// It would notice a change: the same message with its Subject edited.
	if got := runPython(t, records, strings.Replace(m.Data, "Subject: "+marker, "Subject: changed", 1)); got != "[false, false]" {
		t.Fatalf("dkimpy on a tampered copy says %s", got)
	}
}

func runPython(t *testing.T, records map[string]string, msg string) string {
	t.Helper()
	dir := t.TempDir()
	script, recs, msgPath := filepath.Join(dir, "v.py"), filepath.Join(dir, "r.json"), filepath.Join(dir, "m.eml")
	b, _ := json.Marshal(records)
	for p, c := range map[string]string{script: pythonVerifier, recs: string(b), msgPath: msg} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("/usr/bin/python3", script, recs, msgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("python3-dkim: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestSubmissionForeignFromNotSigned(t *testing.T) {
	mark := logMark()
	m, _ := aliceToBob(t, "CEO <ceo@bank.example>", "Pay now.\r\n")
	if sigs := header(m.Data, "DKIM-Signature"); len(sigs) != 0 {
		t.Fatalf("signed a From alice may not use: %q", sigs)
	}
	waitLog(t, mark, "sender may not use the From address", "from=ceo@bank.example")
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// A rotation through the running daemon: the new key signs only once
// DNS serves its record and wehr has been told (SIGHUP) or has checked.
func TestKeyRotationWithSIGHUP(t *testing.T) {
	store := &dkimkeys.Store{Dir: filepath.Join(w.dir, "dkim")}
	keys, err := store.Rotate("example.test", []string{dkimkeys.RSA}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newSel := keys[0].Selector
	sendSigned := func() string {
		t.Helper()
		m, _ := aliceToBob(t, "Alice <alice@example.test>", "Rotation.\r\n")
		return strings.Join(header(m.Data, "DKIM-Signature"), "\n")
	}
	// Pending, not in DNS: the old key signs, even after a SIGHUP.
	sighup(t, "DKIM keys loaded")
	if sigs := sendSigned(); !strings.Contains(sigs, "s=2026a-rsa") || strings.Contains(sigs, "s="+newSel) {
		t.Fatalf("before publication: %s", sigs)
	}
	// Published: after a SIGHUP the new key signs, the old RSA key retires.
	w.dns.AddTXT(keys[0].RecordName(), keys[0].Record())
	sighup(t, "to=active")
	if sigs := sendSigned(); !strings.Contains(sigs, "s="+newSel) || strings.Contains(sigs, "s=2026a-rsa;") || !strings.Contains(sigs, "s=2026a-ed") {
		t.Fatalf("after publication: %s", sigs)
	}
}

// sighup sends wehr SIGHUP and waits until its log has one more line
// containing want than before: a count from before the signal, so that
// lines of earlier reloads do not answer for this one.
func sighup(t *testing.T, want string) {
	t.Helper()
	n := strings.Count(readFile(w.wehr.Log), want)
	if err := w.wehr.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(readFile(w.wehr.Log), want) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("wehr did not log %q after SIGHUP", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SIGHUP reloads the configuration: a broken file changes nothing (and
// says why in the log), a good one takes effect without a restart.
func TestConfigReload(t *testing.T) {
	orig := readFile(w.wehr.Config)
	defer func() {
		os.WriteFile(w.wehr.Config, []byte(orig), 0o644) //nolint:errcheck
		sighup(t, "configuration reloaded")
	}()
	spoof := func() Reply {
		data, _ := message(t, "CEO <ceo@bank.example>", "", "Pay now.\r\n")
		return w.send(t, Client{IP: "203.0.113.5", Name: "mail.evil.example", Helo: "mail.evil.example"}, "x@evil.example", data)
	}
	if r := spoof(); r.Code != 550 {
		t.Fatalf("before: %v", r)
	}
	// A broken file: logged, ignored.
	if err := os.WriteFile(w.wehr.Config, []byte(orig+"dmarc:\n  refusal: sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark := logMark()
	sighup(t, "config not reloaded")
	waitLog(t, mark, `dmarc.refusal: \"sometimes\" is not one of evidence, honor, quarantine`)
	waitLog(t, mark, "reload refused")
	if r := spoof(); r.Code != 550 {
		t.Fatalf("after a broken reload: %v", r)
	}
	// A good one: quarantine instead of refusal, at once.
	if err := os.WriteFile(w.wehr.Config, []byte(orig+"dmarc:\n  refusal: quarantine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sighup(t, "configuration reloaded")
	if r := spoof(); !r.OK() {
		t.Fatalf("after the reload: %v", r)
	}
}

// A key file that goes bad (here: readable by others) does not stop
// signing at the next SIGHUP: the old keys stay, the log says why.
func TestBrokenKeyOnReload(t *testing.T) {
	key := filepath.Join(w.dir, "dkim", "example.test", "2026a-ed.pem")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Chmod(key, 0o600) //nolint:errcheck
		sighup(t, "DKIM keys loaded")
	}()
	mark := logMark()
	sighup(t, "DKIM keys broken on reload; the domains loaded before keep their old keys")
	waitLog(t, mark, "DKIM keys broken on reload", "2026a-ed.pem")
	m, _ := aliceToBob(t, "Alice <alice@example.test>", "Signed with the old keys.\r\n")
	if sigs := strings.Join(header(m.Data, "DKIM-Signature"), "\n"); !strings.Contains(sigs, "s=2026a-ed") {
		t.Fatalf("not signed with the kept key: %s", sigs)
	}
}
