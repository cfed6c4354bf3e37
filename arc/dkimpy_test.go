package arc

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
)

// dkimpy is Debian's python3-dkim (with python3-authres for ARC
// signing): an independent ARC implementation.
const dkimpyScript = `
import sys, json, dkim
recs = json.load(open(sys.argv[2]))
def dnsfunc(name, timeout=5):
    v = recs.get(name.decode().rstrip('.'))
    return v.encode() if v else None
msg = open(sys.argv[3], 'rb').read()
if sys.argv[1] == 'verify':
    cv, results, comment = dkim.arc_verify(msg, dnsfunc=dnsfunc)
    print(cv.decode(), comment)
else:
    key = open(sys.argv[4], 'rb').read()
    for h in dkim.arc_sign(msg, b'arc', b'lists.example.net', key, b'mx.lists.example.net',
                           include_headers=[b'from', b'to', b'subject', b'date']):
        sys.stdout.write(h.decode())
`

func dkimpy(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Fatal("/usr/bin/python3 missing: scripts/install-test-deps installs python3-dkim (make test does)")
	}
	script := filepath.Join(t.TempDir(), "arc.py")
	os.WriteFile(script, []byte(dkimpyScript), 0o644)
	out, err := exec.Command("/usr/bin/python3", append([]string{script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("python3-dkim: %v\n%s", err, out)
	}
	return string(out)
}

// Our seals verify with dkimpy, and dkimpy's with ours: two chains,
// each sealed by one implementation on top of the other's.
func TestInteropDkimpy(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	record := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	recs := map[string]string{"arc._domainkey.fwd.example": record, "arc._domainkey.lists.example.net": record}
	b, _ := json.Marshal(recs)
	recsPath, keyPath := filepath.Join(dir, "recs.json"), filepath.Join(dir, "key.pem")
	os.WriteFile(recsPath, b, 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	srv := dnstest.New(t, "")
	for n, v := range recs {
		srv.AddTXT(n, v)
	}
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	// dkimpy seals with the arc= result of the A-R of its authserv-id.
	listAR := func(arc string) string {
		return "Authentication-Results: mx.lists.example.net; arc=" + arc + "; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example\r\n"
	}
	msg := bankMessage
	sealOurs := func(m string) string {
		br := bufio.NewReader(strings.NewReader(m))
		h, _ := mailauth.ReadHeader(br, 0)
		s, err := Seal(context.Background(), res, h, strings.NewReader(m[h.Size:]), SealOptions{Domain: "fwd.example", Selector: "arc", Key: key,
			AuthservID: "mx.fwd.example", Results: "dmarc=pass header.from=bank.example", Headers: []string{"from", "to", "subject", "date"}, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return "ARC-Seal: " + s.Seal + "\r\nARC-Message-Signature: " + s.AMS + "\r\nARC-Authentication-Results: " + s.AAR + "\r\n" + m
	}
	write := func(m string) string {
		p := filepath.Join(dir, "m.eml")
		os.WriteFile(p, []byte(m), 0o644)
		return p
	}
	// Ours first (i=1), then dkimpy's (i=2), each verified by the other.
	ours := sealOurs(msg)
	if out := dkimpy(t, "verify", recsPath, write(ours)); !strings.HasPrefix(out, "pass") {
		t.Fatalf("dkimpy on our seal: %s", out)
	}
	withAR := listAR("pass") + ours
	theirs := dkimpy(t, "sign", recsPath, write(withAR), keyPath) + withAR
	if got := verifyMessage(t, res, theirs); got.Result != mailauth.ARCPass || got.Instances != 2 {
		t.Fatalf("ours on dkimpy's seal over ours: %s %s", got.Result, got.Error)
	}
	// dkimpy first (i=1), then ours (i=2).
	first := dkimpy(t, "sign", recsPath, write(listAR("none")+msg), keyPath) + listAR("none") + msg
	if got := verifyMessage(t, res, first); got.Result != mailauth.ARCPass || got.Instances != 1 {
		t.Fatalf("ours on dkimpy's seal: %s %s", got.Result, got.Error)
	}
	second := sealOurs(first)
	if out := dkimpy(t, "verify", recsPath, write(second)); !strings.HasPrefix(out, "pass") {
		t.Fatalf("dkimpy on our seal over its own: %s", out)
	}
	// A modified body: both say fail.
	broken := strings.Replace(second, "The figures.", "Other figures.", 1)
	if out := dkimpy(t, "verify", recsPath, write(broken)); !strings.HasPrefix(out, "fail") {
		t.Errorf("dkimpy on a modified message: %s", out)
	}
	if got := verifyMessage(t, res, broken); got.Result != mailauth.ARCFail {
		t.Errorf("ours on a modified message: %s", got.Result)
	}
}
