package integration

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAnsiblePostfixDANE: the postfix_wehr role with
// postfix_wehr_outbound_tls: dane, applied for real; Postfix then runs
// from the role's files with a validating resolver (the test DNS marks
// its answers DNSSEC-validated; Postfix's processes see it through their
// own /etc/resolv.conf, bind-mounted in a mount namespace of their own,
// with glibc's "options trust-ad"). Mail to a domain whose TLSA record
// matches the receiver's key goes out over verified TLS; mail to one
// whose TLSA record does not match stays in the queue (deferred, never
// bounced, never sent in clear or to the wrong server).
func TestAnsiblePostfixDANE(t *testing.T) {
	// The resolver Postfix's processes ask, validating.
	dns, ns, err := ResolverNamespace(t.TempDir(), "127.77.0.1", true)
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	defer ns.Close()
	dns.Validating(true)

	tlsDir := t.TempDir()
	os.Chmod(tlsDir, 0o755)
	rcert, rkey := selfSigned(t, tlsDir, "mx.dane.example")
	pair, err := tls.LoadX509KeyPair(rcert, rkey)
	if err != nil {
		t.Fatal(err)
	}
	receiver := newCustomerServer(t, "user@dane.example", "user@bad.example")
	receiver.tls = &tls.Config{Certificates: []tls.Certificate{pair}}
	port := receiver.ln.Addr().(*net.TCPAddr).Port
	// DANE-EE, SPKI, SHA-256 (3 1 1) of the receiver's key; bad.example
	// publishes another key's.
	block, _ := pem.Decode([]byte(readFile(rcert)))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	other := sha256.Sum256([]byte("some other key"))
	zone := fmt.Sprintf(`dane.example.  300 IN MX 10 mx.dane.example.
mx.dane.example. 300 IN A 127.0.0.1
_%[1]d._tcp.mx.dane.example. 300 IN TLSA 3 1 1 %[2]s
bad.example.   300 IN MX 10 mx.bad.example.
mx.bad.example. 300 IN A 127.0.0.1
_%[1]d._tcp.mx.bad.example. 300 IN TLSA 3 1 1 %[3]s
`, port, hex.EncodeToString(spki[:]), hex.EncodeToString(other[:]))
	if err := dns.AddZone(zone); err != nil {
		t.Fatal(err)
	}

	root := filepath.Join(w.dir, "ansible-dane")
	os.MkdirAll(root+"/var/log", 0o755)
	cert2, key2 := selfSigned(t, t.TempDir(), "mx.example.test")
	ps, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]any{
		"postfix_wehr_root": root, "postfix_wehr_service_manager": "none", "postfix_wehr_hostname": "mx.example.test",
		"postfix_wehr_maillog_file": root + "/var/log/maillog", "postfix_wehr_inet_interfaces": "127.0.0.1",
		"postfix_wehr_smtp_service":        fmt.Sprintf("127.0.0.1:%d", ps[0]),
		"postfix_wehr_submission_service":  fmt.Sprintf("127.0.0.1:%d", ps[1]),
		"postfix_wehr_submissions_service": fmt.Sprintf("127.0.0.1:%d", ps[2]),
		"postfix_wehr_virtual_domains":     []string{"example.test"},
		"postfix_wehr_virtual_mailboxes":   []string{"alice@example.test"},
		"postfix_wehr_lmtp":                fmt.Sprintf("inet:127.0.0.1:%d", w.dovecot.LMTPPort),
		"postfix_wehr_sasl_path":           w.dovecot.SASLPath(),
		"postfix_wehr_tls_cert":            cert2, "postfix_wehr_tls_key": key2,
		"postfix_wehr_outbound_tls": "dane",
		// The receivers listen on a test port, not 25: the role's
		// transport map is how an admin would say so (TLSA records are
		// then looked up for that port).
		"postfix_wehr_main_extra": map[string]string{
			"transport_maps":    fmt.Sprintf("inline:{ dane.example=smtp:[mx.dane.example]:%d, bad.example=smtp:[mx.bad.example]:%d }", port, port),
			"smtp_tls_loglevel": "1", "lmtp_host_lookup": "native",
		},
	}
	out, err := ansiblePlaybook(t, "postfix.yml", vars)
	if err != nil {
		t.Fatalf("role: %v\n%s", err, out)
	}
	etc := root + "/etc/postfix"
	main := readFile(etc + "/main.cf")
	for _, want := range []string{"smtp_tls_security_level = dane", "smtp_dns_support_level = dnssec"} {
		if !strings.Contains(main, want) {
			t.Fatalf("the role's main.cf lacks %q", want)
		}
	}
	// wehr on the sockets the role prepared (mail handed in with
	// sendmail comes from this host: trusted, passed on).
	sock := root + "/var/spool/postfix/wehr"
	wdir := t.TempDir()
	wh, err := NewWehr(w.wehr.Bin, wdir, fmt.Sprintf(`authserv_id: mx.example.test
hostname: mx.example.test
milter: {listen: "unix:%[1]s/milter.sock", socket_group: postfix}
policyd: {listen: "unix:%[1]s/policy.sock", socket_group: postfix}
store: {path: %[2]s/wehr.db, admin_socket: %[2]s/admin.sock}
reports: {record: false}
`, sock, wdir), w.dns.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	wh.MilterSocket = sock + "/milter.sock"
	if err := wh.Start(); err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()
	// postfix start forks the master, which stays in the namespace.
	if out, err := ns.Run("postfix", "-c", etc, "start"); err != nil {
		t.Fatalf("postfix start in its own mount namespace: %v %s\n%s", err, out, Tail(root+"/var/log/maillog", 20))
	}
	defer exec.Command("postfix", "-c", etc, "stop").Run()

	send := func(to string) string {
		t.Helper()
		marker := fmt.Sprintf("dane-%s-%d", to, time.Now().UnixNano())
		cmd := exec.Command("sendmail", "-C", etc, "-f", "alice@example.test", to)
		cmd.Stdin = strings.NewReader("From: alice@example.test\nTo: " + to + "\nSubject: " + marker + "\n\n" + marker + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail: %v %s", err, out)
		}
		return marker
	}
	good := send("user@dane.example")
	bad := send("user@bad.example")
	log := root + "/var/log/maillog"
	if got := receiver.wait(t, good); got == "" {
		t.Fatalf("not delivered over DANE:\n%s", Tail(log, 20))
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(readFile(log), "to=<user@bad.example>") || !strings.Contains(readFile(log), "status=deferred") {
		if time.Now().After(deadline) {
			t.Fatalf("the mismatching TLSA record did not defer:\n%s", Tail(log, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	l := readFile(log)
	if !strings.Contains(l, "Verified TLS connection established to mx.dane.example") {
		t.Errorf("no verified TLS to mx.dane.example:\n%s", Tail(log, 20))
	}
	if !strings.Contains(l, "no matching DANE TLSA records") || !strings.Contains(l, "dsn=4.7.5, status=deferred (Server certificate not verified)") {
		t.Errorf("bad.example deferred for another reason than its TLSA record:\n%s", Tail(log, 20))
	}
	if strings.Contains(l, "to=<user@bad.example>") && strings.Contains(l, "status=bounced") {
		t.Errorf("a DANE failure bounced:\n%s", Tail(log, 20))
	}
	receiver.heldBack(t, etc, bad, "user@bad.example")
}
