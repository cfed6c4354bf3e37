package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/resolver/dnstest"
)

// testCA is a certificate authority made for one test: its PEM file,
// and certificates it signs.
type testCA struct {
	file string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wehr test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	ca := &testCA{file: filepath.Join(dir, "ca.pem"), cert: cert, key: key}
	os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return ca
}

var serial = big.NewInt(100)

// issue signs a server certificate for names.
func (ca *testCA) issue(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial = new(big.Int).Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMTASTSThroughPostfix: a real Postfix asks wehr's MTA-STS policy
// service (smtp_tls_policy_maps) before delivering to three domains
// whose MX hosts speak TLS with certificates of a test CA Postfix trusts:
//   - enforce-ok.example, policy enforce, its MX's certificate names the
//     MX: delivered over verified TLS;
//   - enforce-bad.example, policy enforce, its MX shows a certificate for
//     another name (what a man in the middle shows): deferred with a 4xx,
//     kept in the queue, never sent;
//   - testing-bad.example, the same wrong certificate under a testing
//     policy: delivered anyway.
//
// The domains' DNS and policy hosts are the test's: Postfix's processes
// get their own resolv.conf in a mount namespace, wehr the test DNS, and
// the policies are served over HTTPS on port 443 of a loopback address
// the test DNS names, as mta-sts.DOMAIN.
func TestMTASTSThroughPostfix(t *testing.T) {
	ca := newTestCA(t)
	// The receivers: the good MX and the impostor, on one port (Postfix's
	// smtp_tcp_port) of two loopback addresses.
	good := newCustomerServerAt(t, "127.77.1.1:0", "user@enforce-ok.example")
	port := good.ln.Addr().(*net.TCPAddr).Port
	good.tls = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "mx.enforce-ok.example")}}
	bad := newCustomerServerAt(t, fmt.Sprintf("127.77.1.2:%d", port), "user@enforce-bad.example", "user@testing-bad.example")
	bad.tls = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "wrong.example")}}

	sw := newSTSWorld(t, "mtasts", "127.77.0.2", "127.77.2.1", false, ca, port, map[string]string{
		"enforce-ok.example":  "version: STSv1\nmode: enforce\nmx: mx.enforce-ok.example\nmax_age: 86400\n",
		"enforce-bad.example": "version: STSv1\nmode: enforce\nmx: mx.enforce-bad.example\nmax_age: 86400\n",
		"testing-bad.example": "version: STSv1\nmode: testing\nmx: mx.testing-bad.example\nmax_age: 86400\n",
	}, "smtp_dns_support_level = enabled\nsmtp_tls_security_level = may\n")
	zone := ""
	for d, mx := range map[string]string{"enforce-ok.example": "127.77.1.1", "enforce-bad.example": "127.77.1.2", "testing-bad.example": "127.77.1.2"} {
		zone += fmt.Sprintf("%[1]s. 300 IN MX 10 mx.%[1]s.\nmx.%[1]s. 300 IN A %[2]s\n", d, mx)
	}
	if err := sw.dns.AddZone(zone); err != nil {
		t.Fatal(err)
	}

	pf := sw.pf
	okMarker := sw.send(t, "user@enforce-ok.example")
	badMarker := sw.send(t, "user@enforce-bad.example")
	testMarker := sw.send(t, "user@testing-bad.example")
	logf := pf.Maillog()
	good.wait(t, okMarker)
	bad.wait(t, testMarker)
	sw.waitDeferred(t, "user@enforce-bad.example")
	if !pf.LogContains("to=<user@enforce-bad.example>", "dsn=4.7.5, status=deferred (Server certificate not verified)") {
		t.Errorf("enforce-bad.example deferred for another reason:\n%s", Tail(logf, 30))
	}
	if !pf.LogContains("Verified TLS connection established to mx.enforce-ok.example") {
		t.Errorf("no verified TLS to enforce-ok.example's MX:\n%s", Tail(logf, 30))
	}
	bad.heldBack(t, filepath.Join(pf.Dir, "etc"), badMarker, "user@enforce-bad.example")
	wlog := readFile(sw.wh.Log)
	for _, want := range []string{
		`msg="mtasts: policy" domain=enforce-ok.example how=fetched mode=enforce id=20261202 answer="secure match=mx.enforce-ok.example servername=hostname"`,
		`msg="mtasts: policy" domain=testing-bad.example how=fetched mode=testing`,
	} {
		if !strings.Contains(wlog, want) {
			t.Errorf("wehr's log lacks %s:\n%s", want, Tail(sw.wh.Log, 10))
		}
	}
}

// TestMTASTSDANEFirstThroughPostfix: DANE takes precedence over MTA-STS
// (RFC 8461 2), through a real Postfix with a validating resolver (the
// test DNS sets the AD bit; Postfix trusts it with "options trust-ad",
// wehr with the DO bit), as the README tells admins to set it up
// (smtp_dns_support_level = dnssec, smtp_tls_security_level = dane,
// wehr's socketmap as smtp_tls_policy_maps). Both domains publish an
// enforced MTA-STS policy and DNSSEC-validated TLSA records for their MX:
//   - dane-ok.example: the TLSA record names the MX's key, whose
//     certificate is self-signed (the web PKI would refuse it, so under
//     "secure" the mail would stay queued): delivered over DANE;
//   - dane-bad.example: the MX's certificate is one the MTA-STS policy
//     accepts (the test CA, the MX's name), but the TLSA record names
//     another key: deferred (4.7.5, no matching TLSA record) and kept,
//     never delivered through a fallback to the web PKI.
func TestMTASTSDANEFirstThroughPostfix(t *testing.T) {
	ca := newTestCA(t)
	tlsDir := t.TempDir()
	rcert, rkey := selfSigned(t, tlsDir, "mx.dane-ok.example")
	pair, err := tls.LoadX509KeyPair(rcert, rkey)
	if err != nil {
		t.Fatal(err)
	}
	good := newCustomerServerAt(t, "127.77.4.1:0", "user@dane-ok.example")
	good.tls = &tls.Config{Certificates: []tls.Certificate{pair}}
	port := good.ln.Addr().(*net.TCPAddr).Port
	bad := newCustomerServerAt(t, fmt.Sprintf("127.77.4.2:%d", port), "user@dane-bad.example")
	bad.tls = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "mx.dane-bad.example")}}

	sw := newSTSWorld(t, "mtasts-dane", "127.77.0.4", "127.77.5.1", true, ca, port, map[string]string{
		"dane-ok.example":  "version: STSv1\nmode: enforce\nmx: mx.dane-ok.example\nmax_age: 86400\n",
		"dane-bad.example": "version: STSv1\nmode: enforce\nmx: mx.dane-bad.example\nmax_age: 86400\n",
	}, "smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n")
	sw.dns.Validating(true)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	other := sha256.Sum256([]byte("some other key"))
	// The TLSA records at _25._tcp (where RFC 7672 has them, and where
	// wehr looks) and at the test port (where Postfix, told to deliver to
	// smtp_tcp_port, looks).
	zone := ""
	for d, v := range map[string][2]string{"dane-ok.example": {"127.77.4.1", hex.EncodeToString(spki[:])}, "dane-bad.example": {"127.77.4.2", hex.EncodeToString(other[:])}} {
		zone += fmt.Sprintf("%[1]s. 300 IN MX 10 mx.%[1]s.\nmx.%[1]s. 300 IN A %[2]s\n_25._tcp.mx.%[1]s. 300 IN TLSA 3 1 1 %[3]s\n_%[4]d._tcp.mx.%[1]s. 300 IN TLSA 3 1 1 %[3]s\n",
			d, v[0], v[1], port)
	}
	if err := sw.dns.AddZone(zone); err != nil {
		t.Fatal(err)
	}

	pf := sw.pf
	okMarker := sw.send(t, "user@dane-ok.example")
	badMarker := sw.send(t, "user@dane-bad.example")
	logf := pf.Maillog()
	if got := good.wait(t, okMarker); got == "" {
		t.Fatalf("not delivered over DANE:\n%s", Tail(logf, 30))
	}
	sw.waitDeferred(t, "user@dane-bad.example")
	if !pf.LogContains("Verified TLS connection established to mx.dane-ok.example") {
		t.Errorf("no verified TLS to mx.dane-ok.example:\n%s", Tail(logf, 30))
	}
	if !pf.LogContains("no matching DANE TLSA records") || !pf.LogContains("to=<user@dane-bad.example>", "dsn=4.7.5, status=deferred (Server certificate not verified)") {
		t.Errorf("dane-bad.example deferred for another reason than its TLSA record:\n%s", Tail(logf, 30))
	}
	bad.heldBack(t, filepath.Join(pf.Dir, "etc"), badMarker, "user@dane-bad.example")
	wlog := readFile(sw.wh.Log)
	for _, d := range []string{"dane-ok.example", "dane-bad.example"} {
		want := `msg="mtasts: policy" domain=` + d + ` how=fetched mode=enforce id=20261202 dane="TLSA covers every MX host" answer=dane-only`
		if !strings.Contains(wlog, want) {
			t.Errorf("wehr's log lacks %s:\n%s", want, Tail(sw.wh.Log, 10))
		}
	}
}

// stsWorld is a Postfix that asks wehr's MTA-STS socketmap before it
// delivers, both resolving through a test DNS (Postfix's processes
// through a resolv.conf of their own, in a mount namespace), with the
// policies served over HTTPS on port 443 of policyIP, as
// mta-sts.DOMAIN, with certificates of the test CA that Postfix and wehr
// trust. Postfix delivers to port on the MX hosts (smtp_tcp_port).
type stsWorld struct {
	dns *dnstest.Server
	pf  *Postfix
	wh  *Wehr
}

func newSTSWorld(t *testing.T, name, dnsIP, policyIP string, trustAD bool, ca *testCA, port int, policies map[string]string, postfixExtra string) *stsWorld {
	t.Helper()
	dns, ns, err := ResolverNamespace(t.TempDir(), dnsIP, trustAD)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); dns.Close() })
	var names []string
	zone := ""
	for d := range policies {
		names = append(names, "mta-sts."+d)
		zone += fmt.Sprintf("_mta-sts.%[1]s. 300 IN TXT \"v=STSv1; id=20261202\"\nmta-sts.%[1]s. 300 IN A %[2]s\n", d, policyIP)
	}
	if err := dns.AddZone(zone); err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", policyIP+":443")
	if err != nil {
		t.Fatalf("the policy host on port 443: %v", err)
	}
	hsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := policies[strings.TrimPrefix(r.Host, "mta-sts.")]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, p)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.issue(t, names...)}}, ErrorLog: log.New(io.Discard, "", 0)}
	go hsrv.ServeTLS(hln, "", "") //nolint:errcheck
	t.Cleanup(func() { hsrv.Close() })

	ports, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	wdir := filepath.Join(w.dir, name)
	os.MkdirAll(wdir, 0o755)
	wh, err := StartWehr(w.wehr.Bin, wdir, fmt.Sprintf(`hostname: mx.example.test
milter: {listen: "inet:127.0.0.1:%[1]d"}
policyd: {listen: "inet:127.0.0.1:%[2]d"}
store: {path: %[4]s/wehr.db, admin_socket: %[4]s/admin.sock}
mtasts: {listen: "inet:127.0.0.1:%[3]d", ca_file: %[5]s}
`, ports[0], ports[1], ports[2], wdir, ca.file), dns.Addr(), ports[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wh.Stop() })
	pf, err := StartPostfix(filepath.Join(w.dir, "mx-"+name), PostfixConfig{Hostname: "mx.example.test", SMTPPort: ports[3],
		LMTPPort: w.dovecot.LMTPPort, Domain: "example.test", Users: []string{"alice"}, Via: ns.Via,
		Extra: postfixExtra + fmt.Sprintf(`smtp_host_lookup = dns
smtp_tls_CAfile = %s
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:%d:postfix
smtp_tcp_port = %d
smtp_tls_loglevel = 1
`, ca.file, ports[2], port)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pf.Stop() })
	return &stsWorld{dns: dns, pf: pf, wh: wh}
}

// send hands a message for to to Postfix and returns its marker.
func (sw *stsWorld) send(t *testing.T, to string) string {
	t.Helper()
	marker := fmt.Sprintf("mtasts-%s-%d", to, time.Now().UnixNano())
	cmd := exec.Command("sendmail", "-C", filepath.Join(sw.pf.Dir, "etc"), "-f", "alice@example.test", to)
	cmd.Stdin = strings.NewReader("From: alice@example.test\nTo: " + to + "\nSubject: " + marker + "\n\n" + marker + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v %s", err, out)
	}
	return marker
}

// waitDeferred waits for Postfix to defer the message for to, and checks
// that it neither bounced nor left.
func (sw *stsWorld) waitDeferred(t *testing.T, to string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !sw.pf.LogContains("to=<"+to+">", "status=deferred") {
		if time.Now().After(deadline) {
			t.Fatalf("%s was not deferred:\n%s", to, Tail(sw.pf.Maillog(), 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if sw.pf.LogContains("to=<"+to+">", "status=bounced") || sw.pf.LogContains("to=<"+to+">", "status=sent") {
		t.Errorf("the message for %s left the queue:\n%s", to, Tail(sw.pf.Maillog(), 30))
	}
}
