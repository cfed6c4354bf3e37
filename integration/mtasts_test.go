package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
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
	// The test DNS, for wehr and (through their own resolv.conf) for
	// Postfix's processes.
	dns, ns, err := ResolverNamespace(t.TempDir(), "127.77.0.2", false)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	defer ns.Close()
	dnsAddr := dns.Addr()
	ca := newTestCA(t)

	// The receivers: the good MX and the impostor, on one port (Postfix's
	// smtp_tcp_port) of two loopback addresses.
	good := newCustomerServerAt(t, "127.77.1.1:0", "user@enforce-ok.example")
	port := good.ln.Addr().(*net.TCPAddr).Port
	good.tls = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "mx.enforce-ok.example")}}
	bad := newCustomerServerAt(t, fmt.Sprintf("127.77.1.2:%d", port), "user@enforce-bad.example", "user@testing-bad.example")
	bad.tls = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, "wrong.example")}}

	// The policy hosts.
	policies := map[string]string{
		"enforce-ok.example":  "version: STSv1\nmode: enforce\nmx: mx.enforce-ok.example\nmax_age: 86400\n",
		"enforce-bad.example": "version: STSv1\nmode: enforce\nmx: mx.enforce-bad.example\nmax_age: 86400\n",
		"testing-bad.example": "version: STSv1\nmode: testing\nmx: mx.testing-bad.example\nmax_age: 86400\n",
	}
	var names []string
	zone := ""
	for d := range policies {
		names = append(names, "mta-sts."+d)
		mx := "127.77.1.2"
		if d == "enforce-ok.example" {
			mx = "127.77.1.1"
		}
		zone += fmt.Sprintf("%[1]s. 300 IN MX 10 mx.%[1]s.\nmx.%[1]s. 300 IN A %[2]s\n_mta-sts.%[1]s. 300 IN TXT \"v=STSv1; id=20261202\"\nmta-sts.%[1]s. 300 IN A 127.77.2.1\n", d, mx)
	}
	if err := dns.AddZone(zone); err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", "127.77.2.1:443")
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
	defer hsrv.Close()

	// wehr, with the MTA-STS policy service.
	ports, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	wdir := filepath.Join(w.dir, "mtasts")
	os.MkdirAll(wdir, 0o755)
	wh, err := StartWehr(w.wehr.Bin, wdir, fmt.Sprintf(`hostname: mx.example.test
milter: {listen: "inet:127.0.0.1:%[1]d"}
policyd: {listen: "inet:127.0.0.1:%[2]d"}
store: {path: %[4]s/wehr.db, admin_socket: %[4]s/admin.sock}
mtasts: {listen: "inet:127.0.0.1:%[3]d", ca_file: %[5]s}
`, ports[0], ports[1], ports[2], wdir, ca.file), dnsAddr, ports[0])
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()

	// Postfix, asking wehr, resolving through the test DNS.
	pf, err := StartPostfix(filepath.Join(w.dir, "mx-mtasts"), PostfixConfig{Hostname: "mx.example.test", SMTPPort: ports[3],
		LMTPPort: w.dovecot.LMTPPort, Domain: "example.test", Users: []string{"alice"}, Via: ns.Via,
		Extra: fmt.Sprintf(`smtp_dns_support_level = enabled
smtp_host_lookup = dns
smtp_tls_security_level = may
smtp_tls_CAfile = %s
smtp_tls_policy_maps = socketmap:inet:127.0.0.1:%d:postfix
smtp_tcp_port = %d
smtp_tls_loglevel = 1
`, ca.file, ports[2], port)})
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Stop()

	send := func(to string) string {
		t.Helper()
		marker := fmt.Sprintf("mtasts-%s-%d", to, time.Now().UnixNano())
		cmd := exec.Command("sendmail", "-C", filepath.Join(pf.Dir, "etc"), "-f", "alice@example.test", to)
		cmd.Stdin = strings.NewReader("From: alice@example.test\nTo: " + to + "\nSubject: " + marker + "\n\n" + marker + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail: %v %s", err, out)
		}
		return marker
	}
	okMarker := send("user@enforce-ok.example")
	badMarker := send("user@enforce-bad.example")
	testMarker := send("user@testing-bad.example")
	logf := pf.Maillog()
	good.wait(t, okMarker)
	bad.wait(t, testMarker)
	deadline := time.Now().Add(20 * time.Second)
	for !pf.LogContains("to=<user@enforce-bad.example>", "status=deferred") {
		if time.Now().After(deadline) {
			t.Fatalf("enforce-bad.example was not deferred:\n%s", Tail(logf, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !pf.LogContains("to=<user@enforce-bad.example>", "dsn=4.7.5, status=deferred (Server certificate not verified)") {
		t.Errorf("enforce-bad.example deferred for another reason:\n%s", Tail(logf, 30))
	}
	if !pf.LogContains("Verified TLS connection established to mx.enforce-ok.example") {
		t.Errorf("no verified TLS to enforce-ok.example's MX:\n%s", Tail(logf, 30))
	}
	if pf.LogContains("to=<user@enforce-bad.example>", "status=bounced") || pf.LogContains("to=<user@enforce-bad.example>", "status=sent") {
		t.Errorf("enforce-bad.example's message left the queue:\n%s", Tail(logf, 30))
	}
	bad.heldBack(t, filepath.Join(pf.Dir, "etc"), badMarker, "user@enforce-bad.example")
	wlog := readFile(wh.Log)
	for _, want := range []string{
		`msg="mtasts: policy" domain=enforce-ok.example how=fetched mode=enforce id=20261202 answer="secure match=mx.enforce-ok.example servername=hostname"`,
		`msg="mtasts: policy" domain=testing-bad.example how=fetched mode=testing`,
	} {
		if !strings.Contains(wlog, want) {
			t.Errorf("wehr's log lacks %s:\n%s", want, Tail(wh.Log, 10))
		}
	}
}
