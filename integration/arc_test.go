package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/arc"
	"github.com/wehr/wehr/mailauth"
)

// sealAs adds an ARC set of domain to msg, vouching with results.
func sealAs(t *testing.T, msg, domain string, key *rsa.PrivateKey, results string) string {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(msg))
	h, err := mailauth.ReadHeader(br, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := arc.Seal(context.Background(), nil, h, strings.NewReader(msg[h.Size:]), arc.SealOptions{Domain: domain, Selector: "arc", Key: key,
		AuthservID: "mx." + domain, Results: results, Headers: []string{"From", "To", "Subject", "Date", "Message-ID"}, Now: time.Now(),
		Chain: &mailauth.ARCResult{Result: mailauth.ARCNone}})
	if err != nil {
		t.Fatal(err)
	}
	return "ARC-Seal: " + s.Seal + "\r\nARC-Message-Signature: " + s.AMS + "\r\nARC-Authentication-Results: " + s.AAR + "\r\n" + msg
}

// ARC through a real Postfix whose wehr trusts fwd.example's seals and
// seals what it accepts: the bank's message, broken by the forwarder
// and sealed by it, is accepted with trusted_forwarder into the inbox;
// the same chain sealed by a list we do not trust changes nothing
// (Junk, as without ARC); what we deliver carries our seal on top of
// the forwarder's, and both our verifier and dkimpy's say pass.
func TestARCThroughPostfix(t *testing.T) {
	dir := filepath.Join(w.dir, "arcmx")
	os.MkdirAll(dir, 0o755)
	// RSA: RFC 8617 defines ARC for rsa-sha256 only (dkimpy verifies
	// nothing else).
	keys := map[string]*rsa.PrivateKey{}
	records := map[string]string{}
	for _, d := range []string{"fwd.example", "lists.example.net"} {
		k, _ := rsa.GenerateKey(rand.Reader, 2048)
		keys[d] = k
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		rec := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
		w.dns.AddTXT("arc._domainkey."+d, rec)
		records["arc._domainkey."+d] = rec
	}
	smtpPort, _ := FreePort()
	milterPort, _ := FreePort()
	cfg := fmt.Sprintf(`authserv_id: arcmx.example.test
hostname: arcmx.example.test
log: {level: info}
dns: {timeout: 1s, attempts: 1}
milter: {listen: "inet:127.0.0.1:%d"}
policyd: {listen: "inet:127.0.0.1:%d"}
store: {path: %s/wehr.db, admin_socket: %s/admin.sock}
dkim: {keys_dir: %s}
dmarc:
  trusted_forwarders: {arc_sealers: [fwd.example]}
arc: {seal: all, seal_domain: example.test}
reports: {record: false}
`, milterPort, func() int { p, _ := FreePort(); return p }(), dir, dir, filepath.Join(w.dir, "dkim"))
	wh, err := StartWehr(w.wehr.Bin, dir, cfg, w.dns.Addr(), milterPort)
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()
	pf, err := StartPostfix(filepath.Join(dir, "postfix"), PostfixConfig{Hostname: "arcmx.example.test", SMTPPort: smtpPort,
		MilterAddr: fmt.Sprintf("inet:127.0.0.1:%d", milterPort), LMTPPort: w.dovecot.LMTPPort, Domain: "example.test",
		Users: []string{"alice", "bob", "carol"}})
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Stop()
	fwd := Client{IP: "192.0.2.20", Name: "mx.fwd.example", Helo: "mx.fwd.example"}
	forwarded := func(sealer string) (string, string) {
		data, marker := message(t, "Statements <statements@bank.example>", "", "Your statement is ready.\r\n")
		data = w.sign(t, data, "bank.example", "sel")
		data += "-- \r\nForwarded by " + sealer + "\r\n" // breaks the bank's body hash
		return sealAs(t, data, sealer, keys[sealer], "spf=pass smtp.mailfrom=bank.example; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example"), marker
	}
	send := func(data string) {
		t.Helper()
		r, err := Send(fmt.Sprintf("127.0.0.1:%d", smtpPort), fwd, "alice+fwd@fwd.example", []string{"alice@example.test"}, data)
		if err != nil || !r.OK() {
			t.Fatalf("SMTP: %v %v\n%s", r, err, Tail(wh.Log, 10))
		}
	}

	data, marker := forwarded("fwd.example")
	send(data)
	m, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, Tail(wh.Log, 10))
	}
	var ar string
	for _, v := range header(m.Data, "Authentication-Results") {
		if strings.HasPrefix(strings.TrimSpace(v), "arcmx.example.test") {
			ar = v
		}
	}
	if !strings.Contains(ar, "arc=pass") || !strings.Contains(ar, "overrides trusted_forwarder") || !strings.Contains(ar, "policy.dmarc=none") {
		t.Errorf("A-R: %s", ar)
	}
	// Our seal, on top of the forwarder's: i=2, verified here and by dkimpy.
	if seals := header(m.Data, "ARC-Seal"); len(seals) != 2 || !strings.Contains(seals[0], "i=2") || !strings.Contains(seals[0], "d=example.test") || !strings.Contains(seals[0], "cv=pass") {
		t.Fatalf("seals %q", seals)
	}
	out, err := wehrCmd(t, emptyCfg(t), "--json", "check", "message", "--ip", "192.0.2.99", m.Path)
	var v struct {
		ARC mailauth.ARCResult `json:"arc"`
	}
	if jerr := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &v); err != nil || jerr != nil || v.ARC.Result != "pass" || v.ARC.Instances != 2 ||
		strings.Join(v.ARC.Sealers, ",") != "fwd.example,example.test" {
		t.Errorf("our verifier on the delivered message: %v %v %+v\n%s", err, jerr, v.ARC, out)
	}
	for _, k := range keysOfDir(t, filepath.Join(w.dir, "dkim", "example.test")) {
		records[k.name] = k.record
	}
	if got := dkimpyARC(t, records, m.Data); !strings.HasPrefix(got, "pass") {
		t.Errorf("dkimpy on the delivered message: %s", got)
	}

	// The same, sealed by a list we do not trust: as if there were no
	// chain (Junk), and no trusted_forwarder.
	data, marker = forwarded("lists.example.net")
	send(data)
	m, err = w.dovecot.WaitMessage("alice@example.test", "Junk", marker, 10*time.Second)
	if err != nil {
		t.Fatalf("untrusted sealer: %v", err)
	}
	if strings.Contains(strings.Join(header(m.Data, "Authentication-Results"), "\n"), "trusted_forwarder") {
		t.Error("an untrusted sealer overrode DMARC")
	}
}

func emptyCfg(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "wehr.yaml")
	os.WriteFile(p, []byte("log: {level: warn}\n"), 0o644)
	return p
}

type keyRecord struct{ name, record string }

// keysOfDir reads the DNS records of a domain's keys with wehr dkim list.
func keysOfDir(t *testing.T, dir string) []keyRecord {
	t.Helper()
	out, err := exec.Command(w.wehr.Bin, "dkim", "dns-record", "--dir", filepath.Dir(dir), filepath.Base(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("wehr dkim dns-record: %v %s", err, out)
	}
	var recs []keyRecord
	name := ""
	for _, line := range strings.Split(string(out), "\n") {
		if i := strings.Index(line, "(name "); i >= 0 && strings.HasPrefix(line, "; the same as one string") {
			name = strings.TrimSuffix(strings.TrimSuffix(line[i+6:], ":"), ")")
			continue
		}
		if name != "" && strings.HasPrefix(line, "; v=DKIM1") {
			recs = append(recs, keyRecord{name, strings.TrimPrefix(line, "; ")})
			name = ""
		}
	}
	if len(recs) == 0 {
		t.Fatalf("no records in %s", out)
	}
	return recs
}

const dkimpyARCScript = `
import sys, json, dkim
recs = json.load(open(sys.argv[1]))
def dnsfunc(name, timeout=5):
    v = recs.get(name.decode().rstrip('.'))
    return v.encode() if v else None
cv, results, comment = dkim.arc_verify(open(sys.argv[2], 'rb').read(), dnsfunc=dnsfunc)
print(cv.decode(), comment)
`

func dkimpyARC(t *testing.T, records map[string]string, msg string) string {
	t.Helper()
	dir := t.TempDir()
	b, _ := json.Marshal(records)
	script, recs, m := filepath.Join(dir, "a.py"), filepath.Join(dir, "r.json"), filepath.Join(dir, "m.eml")
	os.WriteFile(script, []byte(dkimpyARCScript), 0o644)
	os.WriteFile(recs, b, 0o644)
	os.WriteFile(m, []byte(strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")), 0o644)
	out, err := exec.Command("/usr/bin/python3", script, recs, m).CombinedOutput()
	if err != nil {
		t.Fatalf("python3-dkim: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}
