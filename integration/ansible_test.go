package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/store"
)

// ansiblePlaybook runs a playbook of ansible/tests against this machine
// (connection local) with vars, and returns its output.
func ansiblePlaybook(t *testing.T, playbook string, vars map[string]any, extra ...string) (string, error) {
	t.Helper()
	return ansiblePlaybookInv(t, playbook, "localhost,", vars, extra...)
}

// ansiblePlaybookInv is ansiblePlaybook with an inventory (a file, or a
// host list ending in a comma).
func ansiblePlaybookInv(t *testing.T, playbook, inventory string, vars map[string]any, extra ...string) (string, error) {
	t.Helper()
	return ansiblePlaybookVia(t, nil, playbook, inventory, vars, extra...)
}

// ansiblePlaybookVia is ansiblePlaybookInv run through a command prefix
// (nsenter into a mount namespace).
func ansiblePlaybookVia(t *testing.T, via []string, playbook, inventory string, vars map[string]any, extra ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatal("ansible-playbook missing: scripts/install-test-deps installs Debian's ansible (make test does)")
	}
	dir := t.TempDir()
	vf := filepath.Join(dir, "vars.json")
	b, _ := json.Marshal(vars)
	os.WriteFile(vf, b, 0o644)
	abs, _ := filepath.Abs(filepath.Join("..", "ansible"))
	args := append([]string{"-c", "local", "-i", inventory, "-e", "@" + vf, filepath.Join(abs, "tests", playbook)}, extra...)
	args = append(append(append([]string{}, via...), "ansible-playbook"), args...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "rtmp"), "ANSIBLE_ROLES_PATH="+filepath.Join(abs, "roles"),
		"ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3", "ANSIBLE_STDOUT_CALLBACK=default", "ANSIBLE_PIPELINING=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

var recapChanged = regexp.MustCompile(`ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0`)

// The wehr role, applied for real into a temporary root: the binary, a
// wehr.yaml that wehr config check passed, DKIM keys made on the host
// with their records fetched to the controller, the sender map, the
// unit from dist/; a second run changes nothing; --check --diff runs;
// and wehr serve starts from exactly the files it wrote.
func TestAnsibleWehrRole(t *testing.T) {
	root := t.TempDir()
	os.Chmod(root, 0o755)
	records := t.TempDir()
	ps, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	milterPort, policyPort, metricsPort := ps[0], ps[1], ps[2]
	vars := map[string]any{
		"wehr_root": root, "wehr_binary_src": w.wehr.Bin, "wehr_service_manager": "none",
		"wehr_manage_user": false, "wehr_user": "nobody", "wehr_group": "nogroup",
		"wehr_dkim_domains": []string{"example.test"}, "wehr_dns_records_dir": records,
		"wehr_senders": []string{"alice@example.test  alice@example.test"},
		"wehr_config": map[string]any{
			"hostname": "mx1.example.test",
			"milter":   map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", milterPort)},
			"policyd":  map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", policyPort)},
			"metrics":  map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", metricsPort)},
			"store":    map[string]any{"admin_socket": root + "/run/wehr/admin.sock"},
		},
	}
	start := time.Now()
	out, err := ansiblePlaybook(t, "wehr.yml", vars)
	first := time.Since(start)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	m := recapChanged.FindStringSubmatch(out)
	if m == nil || m[2] == "0" {
		t.Fatalf("first run changed nothing?\n%s", out)
	}
	for p, mode := range map[string]os.FileMode{
		"/usr/local/bin/wehr": 0o755, "/etc/wehr/wehr.yaml": 0o640, "/etc/wehr/senders": 0o640,
		"/var/lib/wehr": 0o700, "/etc/systemd/system/wehr.service": 0o644,
		"/usr/local/share/man/man1/wehr.1": 0o644, "/usr/local/share/man/man1/wehr-serve.1": 0o644,
		"/usr/share/bash-completion/completions/wehr": 0o644, "/usr/local/share/zsh/site-functions/_wehr": 0o644,
		"/usr/share/fish/vendor_completions.d/wehr.fish": 0o644,
	} {
		fi, err := os.Stat(root + p)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want %v", p, err, fi, mode)
		}
	}
	if b := readFile(root + "/usr/share/bash-completion/completions/wehr"); !strings.Contains(b, "__start_wehr") {
		t.Errorf("the bash completion is not wehr's: %.200s", b)
	}
	if b := readFile(root + "/usr/local/share/man/man1/wehr.1"); !strings.Contains(b, ".TH") {
		t.Errorf("wehr.1 is not a man page: %.200s", b)
	}
	unit, _ := os.ReadFile(root + "/etc/systemd/system/wehr.service")
	dist, _ := os.ReadFile("../dist/wehr.service")
	if string(unit) != string(dist) {
		t.Error("the unit is not dist/wehr.service")
	}
	keys, _ := filepath.Glob(root + "/var/lib/wehr/dkim/example.test/*.pem")
	zone, _ := os.ReadFile(filepath.Join(records, "localhost-example.test.zone"))
	if len(keys) != 2 || !strings.Contains(string(zone), "._domainkey.example.test. IN TXT") {
		t.Fatalf("keys %v, records %q", keys, zone)
	}
	if !strings.Contains(out, "_domainkey.example.test") {
		t.Error("the play does not print the records to publish")
	}

	start = time.Now()
	out, err = ansiblePlaybook(t, "wehr.yml", vars)
	second := time.Since(start)
	if m := recapChanged.FindStringSubmatch(out); err != nil || m == nil || m[2] != "0" {
		t.Fatalf("second run: %v, want changed=0\n%s", err, out)
	}
	if out, err := ansiblePlaybook(t, "wehr.yml", vars, "--check", "--diff"); err != nil {
		t.Fatalf("--check --diff: %v\n%s", err, out)
	}
	t.Logf("first run %v, second run %v", first.Round(100*time.Millisecond), second.Round(100*time.Millisecond))

	// A broken setting is refused by wehr config check, file unchanged.
	bad := map[string]any{}
	for k, v := range vars {
		bad[k] = v
	}
	bad["wehr_config"] = map[string]any{"dns": map[string]any{"timout": "2s"}}
	before, _ := os.ReadFile(root + "/etc/wehr/wehr.yaml")
	if out, err := ansiblePlaybook(t, "wehr.yml", bad); err == nil || !strings.Contains(out, "dns.timout") {
		t.Fatalf("a bad config was accepted: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(root + "/etc/wehr/wehr.yaml"); string(after) != string(before) {
		t.Fatal("the bad config replaced the good one")
	}

	// wehr serve from exactly these files.
	os.MkdirAll(root+"/run/wehr", 0o755)
	cmd := exec.Command(root+"/usr/local/bin/wehr", "--config", root+"/etc/wehr/wehr.yaml", "--resolver", w.dns.Addr(), "serve")
	logf, _ := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := WaitListening(milterPort, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, Tail(logf.Name(), 20))
	}
	var code int
	for range 50 {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)); err == nil {
			code = resp.StatusCode
			resp.Body.Close()
			if code == 200 {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code != 200 {
		t.Fatalf("/readyz %d\n%s", code, Tail(logf.Name(), 20))
	}
	if log := readFile(logf.Name()); !strings.Contains(log, "dkim_domains=1") || !strings.Contains(log, "sender_map=true") {
		t.Errorf("wehr did not load the keys and sender map the role wrote:\n%s", log)
	}
}

// ansible-lint, production profile, offline: the roles as they are.
func TestAnsibleLint(t *testing.T) {
	if _, err := exec.LookPath("ansible-lint"); err != nil {
		t.Fatal("ansible-lint missing: scripts/install-test-deps installs it (make test does)")
	}
	cmd := exec.Command("ansible-lint", "--offline", "--nocolor", "-p", "--profile", "production")
	cmd.Dir = "../ansible"
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_ROLES_PATH=roles")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Passed with production profile: 0 failure(s), 0 warning(s)") {
		t.Fatalf("ansible-lint: %v\n%s", err, out)
	}
	// site.yml with the example inventory: every play and role resolves.
	cmd = exec.Command("ansible-playbook", "--syntax-check", "-i", "inventory.example.yml", "site.yml")
	cmd.Dir = "../ansible"
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "ANSIBLE_ROLES_PATH=roles")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("site.yml: %v\n%s", err, out)
	}
}

// selfSigned writes a certificate and key for name into dir.
func selfSigned(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	pk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &pk.PublicKey, pk)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(pk)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o644)
	return cert, key
}

// The postfix_wehr role, applied for real into a temporary root, with
// wehr on the unix sockets the role prepares; Postfix then runs from
// exactly the files the role wrote: inbound mail over STARTTLS is
// checked by wehr and delivered, a spoof of a p=reject domain gets 550;
// on 587 AUTH is offered only after STARTTLS, and a logged-in message is
// DKIM-signed; 465 takes implicit TLS; a second run changes nothing.
func TestAnsiblePostfixRole(t *testing.T) {
	root := filepath.Join(w.dir, "ansible-postfix")
	os.MkdirAll(root, 0o755)
	tlsDir := t.TempDir()
	os.Chmod(tlsDir, 0o755)
	cert, key := selfSigned(t, tlsDir, "mx.example.test")
	ps, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	smtpPort, subPort, smtpsPort, bulkPort := ps[0], ps[1], ps[2], ps[3]
	customer := newCustomerServer(t, "known@customer.example")
	vars := map[string]any{
		"postfix_wehr_relay_domains": map[string]string{"customer.example": customer.ln.Addr().(*net.TCPAddr).String()},
		"postfix_wehr_root":          root, "postfix_wehr_service_manager": "none", "postfix_wehr_hostname": "mx.example.test",
		"postfix_wehr_maillog_file": root + "/var/log/maillog", "postfix_wehr_inet_interfaces": "127.0.0.1",
		"postfix_wehr_smtp_service":        fmt.Sprintf("127.0.0.1:%d", smtpPort),
		"postfix_wehr_submission_service":  fmt.Sprintf("127.0.0.1:%d", subPort),
		"postfix_wehr_submissions_service": fmt.Sprintf("127.0.0.1:%d", smtpsPort),
		"postfix_wehr_virtual_domains":     []string{"example.test"},
		"postfix_wehr_virtual_mailboxes":   []string{"alice@example.test", "bob@example.test", "carol@example.test"},
		"postfix_wehr_lmtp":                fmt.Sprintf("inet:127.0.0.1:%d", w.dovecot.LMTPPort),
		"postfix_wehr_sasl_path":           w.dovecot.SASLPath(),
		"postfix_wehr_tls_cert":            cert, "postfix_wehr_tls_key": key,
		"postfix_wehr_main_extra": map[string]string{"smtp_dns_support_level": "disabled", "lmtp_host_lookup": "native"},
		"postfix_wehr_bulk":       true, "postfix_wehr_bulk_listen": fmt.Sprintf("127.0.0.1:%d", bulkPort),
		"postfix_wehr_bulk_main_extra": map[string]string{"smtp_dns_support_level": "disabled", "lmtp_host_lookup": "native",
			"transport_maps": fmt.Sprintf("inline:{ example.test=lmtp:inet:127.0.0.1:%d }", w.dovecot.LMTPPort)},
	}
	os.MkdirAll(root+"/var/log", 0o755)
	out, err := ansiblePlaybook(t, "postfix.yml", vars)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	// wehr on the sockets in the queue directory, as the README wires it.
	sock := root + "/var/spool/postfix/wehr"
	wdir := t.TempDir()
	senders := filepath.Join(wdir, "senders")
	os.WriteFile(senders, []byte("alice@example.test  alice@example.test\n"), 0o644)
	cfg := fmt.Sprintf(`authserv_id: mx.example.test
hostname: mx.example.test
log: {level: info}
dns: {timeout: 1s, attempts: 1}
milter: {listen: "unix:%[1]s/milter.sock", socket_group: postfix, trusted_networks: []}
policyd:
  listen: "unix:%[1]s/policy.sock"
  socket_group: postfix
  skip_networks: []
  greylist: {enabled: false}
  submission: {bulk: {filter: "smtp:[127.0.0.1]:%[5]d", min_recipients: 2}}
store: {path: %[2]s/wehr.db, admin_socket: %[2]s/admin.sock}
dkim: {keys_dir: %[3]s, sender_map: %[4]s}
reports: {record: false}
arc: {seal: relay, seal_domain: example.test, local_domains: [example.test]}
`, sock, wdir, filepath.Join(w.dir, "dkim"), senders, bulkPort)
	wh, err := NewWehr(w.wehr.Bin, wdir, cfg, w.dns.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	wh.MilterSocket = sock + "/milter.sock"
	if err := wh.Start(); err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()
	start := exec.Command("postfix", "-c", root+"/etc/postfix", "start")
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("postfix start from the role's files: %v %s\n%s", err, out, Tail(root+"/var/log/maillog", 20))
	}
	defer exec.Command("postfix", "-c", root+"/etc/postfix", "stop").Run()
	// The bulk instance, on its own (postmulti manages only /etc/postfix).
	if out, err := exec.Command("postfix", "-c", root+"/etc/postfix-bulk", "start").CombinedOutput(); err != nil {
		t.Fatalf("bulk instance from the role's files: %v %s\n%s", err, out, Tail(root+"/var/log/maillog", 20))
	}
	defer exec.Command("postfix", "-c", root+"/etc/postfix-bulk", "stop").Run()
	for _, p := range []int{smtpPort, subPort, smtpsPort, bulkPort} {
		if err := WaitListening(p, 10*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, Tail(root+"/var/log/maillog", 20))
		}
	}
	insecure := &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"}
	deliver := func(c *smtp.Client, from, to, data string) error {
		if err := c.Mail(from); err != nil {
			return err
		}
		if err := c.Rcpt(to); err != nil {
			return err
		}
		wc, err := c.Data()
		if err != nil {
			return err
		}
		io.WriteString(wc, data)
		return wc.Close()
	}
	dial := func(port int, implicit bool) *smtp.Client {
		t.Helper()
		var conn net.Conn
		var err error
		if implicit {
			conn, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), insecure)
		} else {
			conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.NewClient(conn, "mx.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Hello("client.example"); err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Inbound over STARTTLS: checked by wehr, delivered.
	c := dial(smtpPort, false)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("port 25 does not offer STARTTLS")
	}
	if err := c.StartTLS(insecure); err != nil {
		t.Fatal(err)
	}
	data, marker := message(t, "Alice <a@good.example>", "", "Hello over TLS.\r\n")
	if err := deliver(c, "bounce@good.example", "alice@example.test", w.sign(t, data, "good.example", "sel")); err != nil {
		t.Fatalf("inbound: %v\n%s", err, Tail(root+"/var/log/maillog", 10))
	}
	c.Quit()
	m, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, Tail(root+"/var/log/maillog", 10))
	}
	if ar := strings.Join(header(m.Data, "Authentication-Results"), "\n"); !strings.Contains(ar, "mx.example.test") || !strings.Contains(ar, "dmarc=pass") {
		t.Errorf("A-R: %s", ar)
	}
	if rcv := strings.Join(header(m.Data, "Received"), "\n"); !strings.Contains(rcv, "SMTPS id") {
		t.Errorf("not received over TLS: %s", rcv)
	}
	// A spoof: 550 in the dialogue.
	c = dial(smtpPort, false)
	c.StartTLS(insecure)
	spoof, _ := message(t, "CEO <ceo@bank.example>", "", "Pay now.\r\n")
	var te *textproto.Error
	if err := deliver(c, "x@evil.example", "alice@example.test", spoof); !errors.As(err, &te) || te.Code != 550 || !strings.HasPrefix(te.Msg, "5.7.1 Message rejected: bank.example publishes DMARC policy reject") {
		t.Errorf("spoof: %v", err)
	}
	c.Close()

	// Submission on 587: no AUTH before STARTTLS; after it, a signed message.
	c = dial(subPort, false)
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("587 offers AUTH before STARTTLS")
	}
	if err := c.StartTLS(insecure); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); !ok {
		t.Fatal("587 does not offer AUTH after STARTTLS")
	}
	if err := c.Auth(smtp.PlainAuth("", "alice@example.test", "alicepw", "mx.example.test")); err != nil {
		t.Fatal(err)
	}
	data, marker = message(t, "Alice <alice@example.test>", "", "Signed on the way out.\r\n")
	if err := deliver(c, "alice@example.test", "bob@example.test", data); err != nil {
		t.Fatalf("submission: %v", err)
	}
	c.Quit()
	m, err = w.dovecot.WaitMessage("bob@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sigs := header(m.Data, "DKIM-Signature"); len(sigs) == 0 || !strings.Contains(sigs[0], "d=example.test") {
		t.Errorf("not signed: %q", sigs)
	}
	// ... and the signature verifies (the keys are published in the test DNS).
	vout, err := wehrCmd(t, emptyCfg(t), "--json", "check", "message", m.Path)
	var verdict struct {
		DKIM []struct{ Result, Domain string } `json:"dkim"`
	}
	if jerr := json.Unmarshal([]byte(vout[strings.Index(vout, "{"):]), &verdict); err != nil || jerr != nil || len(verdict.DKIM) == 0 ||
		verdict.DKIM[0].Result != "pass" || verdict.DKIM[0].Domain != "example.test" {
		t.Errorf("the signature does not verify: %v %v\n%s", err, jerr, vout)
	}
	// A message to two recipients is bulk: wehr's policy service routes it
	// to the bulk instance the role made with postmulti, which delivers it.
	c = dial(subPort, false)
	c.StartTLS(insecure)
	if err := c.Auth(smtp.PlainAuth("", "alice@example.test", "alicepw", "mx.example.test")); err != nil {
		t.Fatal(err)
	}
	data, marker = message(t, "Alice <alice@example.test>", "", "Our newsletter.\r\n")
	c.Mail("alice@example.test")
	for _, r := range []string{"bob@example.test", "carol@example.test"} {
		if err := c.Rcpt(r); err != nil {
			t.Fatalf("bulk rcpt: %v", err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wc, data)
	if err := wc.Close(); err != nil {
		t.Fatalf("bulk: %v", err)
	}
	c.Quit()
	m, err = w.dovecot.WaitMessage("carol@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatalf("bulk: %v\n%s", err, Tail(root+"/var/log/maillog", 15))
	}
	if rcv := strings.Join(header(m.Data, "Received"), "\n"); !strings.Contains(rcv, "by bulk.mx.example.test") {
		t.Errorf("not through the bulk instance: %s", rcv)
	}
	// 465: implicit TLS.
	c = dial(smtpsPort, true)
	if err := c.Auth(smtp.PlainAuth("", "alice@example.test", "alicepw", "mx.example.test")); err != nil {
		t.Fatal(err)
	}
	data, marker = message(t, "Alice <alice@example.test>", "", "Over 465.\r\n")
	if err := deliver(c, "alice@example.test", "carol@example.test", data); err != nil {
		t.Fatalf("465: %v", err)
	}
	c.Quit()
	if _, err := w.dovecot.WaitMessage("carol@example.test", "INBOX", marker, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// A relay domain: the customer's own server behind our MX. An
	// unknown recipient is refused at RCPT (Postfix asked the customer's
	// server); a known one gets the message, with our A-R.
	c = dial(smtpPort, false)
	c.StartTLS(insecure)
	c.Mail("bounce@good.example")
	if err := c.Rcpt("nobody@customer.example"); !errors.As(err, &te) || te.Code/100 != 5 {
		t.Errorf("unknown relay recipient: %v", err)
	}
	c.Close()
	c = dial(smtpPort, false)
	c.StartTLS(insecure)
	data, marker = message(t, "Alice <a@good.example>", "", "For the customer's server.\r\n")
	if err := deliver(c, "bounce@good.example", "known@customer.example", w.sign(t, data, "good.example", "sel")); err != nil {
		t.Fatalf("relay: %v\n%s", err, Tail(root+"/var/log/maillog", 10))
	}
	c.Quit()
	got := customer.wait(t, marker)
	if !strings.Contains(got, "Authentication-Results: mx.example.test") || !strings.Contains(got, "dmarc=pass") {
		t.Errorf("the customer's server got no A-R of ours:\n%.600s", got)
	}
	// ... and our ARC seal (arc.seal: relay), which verifies: the
	// customer's server can trust our results whatever it changes.
	if seals := header(got, "ARC-Seal"); len(seals) != 1 || !strings.Contains(seals[0], "i=1") || !strings.Contains(seals[0], "d=example.test") {
		t.Errorf("ARC-Seal at the customer's server: %q", seals)
	}
	relayed := filepath.Join(t.TempDir(), "relayed.eml")
	os.WriteFile(relayed, []byte(strings.ReplaceAll(strings.ReplaceAll(got, "\r\n", "\n"), "\n", "\r\n")), 0o644)
	vout, err = wehrCmd(t, emptyCfg(t), "--json", "check", "message", "--ip", "127.0.0.1", relayed)
	var arcv struct {
		ARC struct{ Result string } `json:"arc"`
	}
	if jerr := json.Unmarshal([]byte(vout[strings.Index(vout, "{"):]), &arcv); jerr != nil || arcv.ARC.Result != "pass" {
		t.Errorf("our seal does not verify: %v %v\n%s", err, jerr, vout)
	}

	out, err = ansiblePlaybook(t, "postfix.yml", vars)
	if m := recapChanged.FindStringSubmatch(out); err != nil || m == nil || m[2] != "0" {
		t.Fatalf("second run: %v, want changed=0\n%s", err, out)
	}
	if out, err := ansiblePlaybook(t, "postfix.yml", vars, "--check", "--diff"); err != nil {
		t.Fatalf("--check --diff: %v\n%s", err, out)
	}
}

// customerServer is a customer's own mail server behind our MX: it
// knows some recipients and keeps what it is sent.
type customerServer struct {
	ln    net.Listener
	known map[string]bool
	// tls, if set, is offered with STARTTLS.
	tls *tls.Config
	mu  sync.Mutex
	got []string
}

func newCustomerServer(t *testing.T, known ...string) *customerServer {
	return newCustomerServerAt(t, "127.0.0.1:0", known...)
}

// newCustomerServerAt is newCustomerServer on a given address.
func newCustomerServerAt(t *testing.T, addr string, known ...string) *customerServer {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &customerServer{ln: ln, known: map[string]bool{}}
	for _, k := range known {
		s.known[k] = true
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *customerServer) serve(c net.Conn) {
	defer func() { c.Close() }()
	br := bufio.NewReader(c)
	io.WriteString(c, "220 mail.customer.example ESMTP\r\n")
	secure := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO") && s.tls != nil && !secure:
			io.WriteString(c, "250-mail.customer.example\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
		case cmd == "STARTTLS" && s.tls != nil && !secure:
			io.WriteString(c, "220 go ahead\r\n")
			tc := tls.Server(c, s.tls)
			if err := tc.Handshake(); err != nil {
				return // the client gave up on our certificate
			}
			c, br, secure = tc, bufio.NewReader(tc), true
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			io.WriteString(c, "250-mail.customer.example\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			addr := strings.ToLower(strings.Trim(strings.Fields(line[8:])[0], "<>"))
			if s.known[addr] {
				io.WriteString(c, "250 ok\r\n")
			} else {
				io.WriteString(c, "550 5.1.1 no such user\r\n")
			}
		case cmd == "DATA":
			io.WriteString(c, "354 go\r\n")
			var b strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil || l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.got = append(s.got, b.String())
			s.mu.Unlock()
			io.WriteString(c, "250 queued\r\n")
		case cmd == "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

// heldBack checks that a message Postfix (configuration in etc) refused
// to send to the server s is still in its queue for rcpt and that s
// never got it: deferred, not bounced, not sent anyway.
func (s *customerServer) heldBack(t *testing.T, etc, marker, rcpt string) {
	t.Helper()
	s.mu.Lock()
	for _, m := range s.got {
		if strings.Contains(m, marker) {
			t.Errorf("the server got the message for %s", rcpt)
		}
	}
	s.mu.Unlock()
	if q, _ := exec.Command("postqueue", "-c", etc, "-p").CombinedOutput(); !strings.Contains(string(q), rcpt) {
		t.Errorf("the deferred message for %s is not in the queue:\n%s", rcpt, q)
	}
}

func (s *customerServer) wait(t *testing.T, marker string) string {
	t.Helper()
	for range 100 {
		s.mu.Lock()
		for _, m := range s.got {
			if strings.Contains(m, marker) {
				s.mu.Unlock()
				return m
			}
		}
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the customer's server did not get %s", marker)
	return ""
}

// lineConn is a text protocol client (IMAP, POP3, ManageSieve, LMTP).
type lineConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func newLineConn(t *testing.T, c net.Conn) *lineConn {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &lineConn{t: t, c: c, br: bufio.NewReader(c)}
}

func (l *lineConn) send(s string) { io.WriteString(l.c, s+"\r\n") }

// until reads lines up to one that starts with one of prefixes, and
// returns them all.
func (l *lineConn) until(prefixes ...string) string {
	l.t.Helper()
	var b strings.Builder
	for {
		line, err := l.br.ReadString('\n')
		if err != nil {
			l.t.Fatalf("read: %v after %q", err, b.String())
		}
		b.WriteString(line)
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				return b.String()
			}
		}
	}
}

func (l *lineConn) startTLS() {
	tc := tls.Client(l.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		l.t.Fatal(err)
	}
	l.c, l.br = tc, bufio.NewReader(tc)
}

// The dovecot_wehr role, applied into a temporary root, Dovecot started
// from exactly its file: a plaintext IMAP login is refused, IMAPS login
// and fetch work, POP3S works; a user's own Sieve filter uploaded over
// ManageSieve (after STARTTLS) files a matching message into its folder,
// and quarantined mail lands in Junk; a second run changes nothing.
func TestAnsibleDovecotRole(t *testing.T) {
	root := filepath.Join(w.dir, "ansible-dovecot")
	os.MkdirAll(root+"/etc/dovecot", 0o755)
	os.MkdirAll(root+"/var/mail", 0o755)
	os.MkdirAll(root+"/var/log", 0o755)
	tlsDir := t.TempDir()
	os.Chmod(tlsDir, 0o755)
	cert, key := selfSigned(t, tlsDir, "imap.example.test")
	var users strings.Builder
	for _, u := range []string{"alice", "bob"} {
		fmt.Fprintf(&users, "%s@example.test:{PLAIN}%spw:5000:5000::%s/var/mail/%s::\n", u, u, root, u)
	}
	os.WriteFile(root+"/etc/dovecot/users", []byte(users.String()), 0o644)
	exec.Command("chown", "-R", "5000:5000", root+"/var/mail").Run()
	ports := map[string]int{}
	ps, err := FreePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{"imap", "imaps", "pop3s", "sieve", "lmtp"} {
		ports[p] = ps[i]
	}
	vars := map[string]any{
		"dovecot_wehr_root": root, "dovecot_wehr_service_manager": "none", "dovecot_wehr_instance_name": "wehr-ansible",
		"dovecot_wehr_log_path": root + "/var/log/dovecot.log", "dovecot_wehr_listen": "127.0.0.1",
		"dovecot_wehr_imap_port": ports["imap"], "dovecot_wehr_imaps_port": ports["imaps"], "dovecot_wehr_pop3s_port": ports["pop3s"],
		"dovecot_wehr_sieve_port": ports["sieve"], "dovecot_wehr_lmtp_port": ports["lmtp"],
		"dovecot_wehr_auth_socket": "/run/dovecot/auth-postfix", "dovecot_wehr_tls_cert": cert, "dovecot_wehr_tls_key": key,
	}
	out, err := ansiblePlaybook(t, "dovecot.yml", vars)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	conf := root + "/etc/dovecot/dovecot.conf"
	// Dovecot keeps the caller's stderr open after it daemonizes: a
	// file, never a pipe.
	errf, _ := os.Create(filepath.Join(root, "dovecot.stderr"))
	start := exec.Command(programs["dovecot"], "-c", conf)
	start.Stdout, start.Stderr = errf, errf
	err = start.Run()
	errf.Close()
	if err != nil {
		t.Fatalf("dovecot from the role's file: %v %s\n%s", err, readFile(errf.Name()), Tail(root+"/var/log/dovecot.log", 20))
	}
	defer exec.Command(programs["dovecot"], "-c", conf, "stop").Run()
	for _, p := range ports {
		if err := WaitListening(p, 10*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, Tail(root+"/var/log/dovecot.log", 20))
		}
	}
	dial := func(port int, implicit bool) *lineConn {
		t.Helper()
		var c net.Conn
		var err error
		if implicit {
			c, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{InsecureSkipVerify: true})
		} else {
			c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return newLineConn(t, c)
	}
	// Plaintext IMAP: the login is refused. (Dovecot trusts a client
	// whose address is its own, so the test comes from 127.0.0.2.)
	pc, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports["imap"]))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l := newLineConn(t, pc)
	l.until("* OK")
	l.send(`a LOGIN "alice@example.test" "alicepw"`)
	if got := l.until("a "); !strings.HasPrefix(strings.TrimSpace(got[strings.LastIndex(got, "a "):]), "a NO") && !strings.Contains(got, "a BAD") {
		t.Errorf("plaintext IMAP login: %q", got)
	}
	// LMTP: a message for a filter, and a quarantined one.
	lmtp := dial(ports["lmtp"], false)
	lmtp.until("220")
	lmtp.send("LHLO test")
	lmtp.until("250 ")
	deliver := func(subject, extra string) {
		lmtp.send("MAIL FROM:<a@good.example>")
		lmtp.until("250")
		lmtp.send("RCPT TO:<alice@example.test>")
		lmtp.until("250")
		lmtp.send("DATA")
		lmtp.until("354")
		lmtp.send("From: a@good.example\r\nTo: alice@example.test\r\nSubject: " + subject + "\r\n" + extra + "\r\nbody\r\n.")
		if got := lmtp.until("250", "4", "5"); !strings.HasPrefix(got, "250") {
			t.Fatalf("LMTP: %s\n%s", got, Tail(root+"/var/log/dovecot.log", 10))
		}
	}
	// ManageSieve: STARTTLS, log in, upload and activate a filter.
	s := dial(ports["sieve"], false)
	s.until("OK")
	s.send("STARTTLS")
	s.until("OK")
	s.startTLS()
	s.until("OK")
	s.send(`AUTHENTICATE "PLAIN" "` + base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alicepw")) + `"`)
	if got := s.until("OK", "NO", "BYE"); !strings.HasPrefix(got, "OK") {
		t.Fatalf("ManageSieve login: %s", got)
	}
	script := "require [\"fileinto\", \"mailbox\"];\r\nif header :contains \"subject\" \"[invoice]\" {\r\n  fileinto :create \"Invoices\";\r\n}\r\n"
	s.send(fmt.Sprintf("PUTSCRIPT \"mine\" {%d+}\r\n%s", len(script), script))
	if got := s.until("OK", "NO"); !strings.HasPrefix(got, "OK") {
		t.Fatalf("PUTSCRIPT: %s", got)
	}
	s.send(`SETACTIVE "mine"`)
	if got := s.until("OK", "NO"); !strings.HasPrefix(got, "OK") {
		t.Fatalf("SETACTIVE: %s", got)
	}
	deliver("[invoice] November", "")
	deliver("quarantined", "X-Wehr-Quarantine: yes (DMARC bank.example p=reject)\r\n")
	deliver("plain", "")
	maildir := root + "/var/mail/alice/Maildir"
	for folder, want := range map[string]string{".Invoices": "[invoice] November", ".Junk": "quarantined", "": "Subject: plain"} {
		files, _ := filepath.Glob(filepath.Join(maildir, folder, "new", "*"))
		found := false
		for _, f := range files {
			if strings.Contains(readFile(f), want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%q not in %s/%s", want, maildir, folder)
		}
	}
	// IMAPS: log in, fetch.
	l = dial(ports["imaps"], true)
	l.until("* OK")
	l.send(`a LOGIN "alice@example.test" "alicepw"`)
	if got := l.until("a "); !strings.Contains(got, "a OK") {
		t.Fatalf("IMAPS login: %q", got)
	}
	l.send("b SELECT INBOX")
	l.until("b ")
	l.send("c FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
	if got := l.until("c "); !strings.Contains(got, "Subject: plain") || !strings.Contains(got, "c OK") {
		t.Errorf("IMAPS fetch: %q", got)
	}
	// POP3S.
	p := dial(ports["pop3s"], true)
	p.until("+OK")
	p.send("USER bob@example.test")
	p.until("+OK", "-ERR")
	p.send("PASS bobpw")
	if got := p.until("+OK", "-ERR"); !strings.HasPrefix(got, "+OK") {
		t.Errorf("POP3S login: %q", got)
	}
	out, err = ansiblePlaybook(t, "dovecot.yml", vars)
	if m := recapChanged.FindStringSubmatch(out); err != nil || m == nil || m[2] != "0" {
		t.Fatalf("second run: %v, want changed=0\n%s", err, out)
	}
}

func TestAnsibleRedisRole(t *testing.T) {
	for _, mode := range []string{"plain", "tls"} {
		t.Run(mode, func(t *testing.T) { testRedisRole(t, mode == "tls") })
	}
}

// redisCA writes a CA and a certificate for 127.0.0.1 signed by it.
func redisCA(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "redis"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return ca, cert, key
}

// The redis role on three "hosts" (three temporary roots): a master and
// two replicas, a Sentinel on each; Redis and the Sentinels started from
// exactly the files it wrote; wehr's store finds the master through the
// Sentinels and its writes reach the replicas; a second run changes
// nothing (the Sentinels' own rewrites of their files included).
func testRedisRole(t *testing.T, useTLS bool) {
	base := t.TempDir()
	type node struct {
		root         string
		port, sentin int
	}
	var nodes []node
	var inv strings.Builder
	inv.WriteString("all:\n  hosts:\n")
	ps, err := FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		nodes = append(nodes, node{root: filepath.Join(base, fmt.Sprintf("r%d", i+1)), port: ps[2*i], sentin: ps[2*i+1]})
	}
	var ca, cert, key string
	tlsVars := ""
	if useTLS {
		ca, cert, key = redisCA(t, base)
		tlsVars = fmt.Sprintf("      redis_tls_cert: %s\n      redis_tls_key: %s\n      redis_tls_ca: %s\n", cert, key, ca)
	}
	for i, n := range nodes {
		master := `""`
		if i > 0 {
			master = "127.0.0.1"
		}
		ports := fmt.Sprintf("      redis_port: %d\n      redis_sentinel_port: %d\n", n.port, n.sentin)
		if useTLS {
			// TLS only: the plaintext ports closed.
			ports = fmt.Sprintf("      redis_port: 0\n      redis_tls_port: %d\n      redis_sentinel_port: 0\n      redis_sentinel_tls_port: %d\n", n.port, n.sentin)
		}
		fmt.Fprintf(&inv, "    r%d:\n      ansible_connection: local\n      redis_root: %s\n%s      redis_master_host: %s\n      redis_master_port: %d\n      redis_sentinel: true\n      redis_sentinel_master_host: 127.0.0.1\n%s",
			i+1, n.root, ports, master, nodes[0].port, tlsVars)
	}
	invPath := filepath.Join(base, "inventory.yml")
	os.WriteFile(invPath, []byte(inv.String()), 0o644)
	vars := map[string]any{"redis_service_manager": "none"}
	out, err := ansiblePlaybookInv(t, "redis.yml", invPath, vars)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	for _, n := range nodes {
		for _, args := range [][]string{{n.root + "/etc/redis/redis.conf"}, {n.root + "/etc/redis/sentinel.conf", "--sentinel"}} {
			cmd := exec.Command("redis-server", args...)
			logf, _ := os.Create(args[0] + ".log")
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			procs = append(procs, cmd)
		}
		for _, p := range []int{n.port, n.sentin} {
			if err := WaitListening(p, 10*time.Second); err != nil {
				t.Fatalf("%v\n%s", err, readFile(n.root+"/etc/redis/redis.conf.log"))
			}
		}
	}
	var sentinels []string
	for _, n := range nodes {
		sentinels = append(sentinels, fmt.Sprintf("127.0.0.1:%d", n.sentin))
	}
	rtls := store.RedisTLS{Enabled: useTLS, CAFile: ca}
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSentinel, Addrs: sentinels, MasterName: "wehr", Prefix: "wehr:", Timeout: time.Second, TLS: rtls})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Set(ctx, "ansible-test", []byte("through the Sentinels"), time.Minute); err != nil {
		t.Fatalf("set through the Sentinels: %v", err)
	}
	replica, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{fmt.Sprintf("127.0.0.1:%d", nodes[2].port)}, Prefix: "wehr:", Timeout: time.Second, TLS: rtls})
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close()
	var got []byte
	for range 50 {
		if v, ok, err := replica.Get(ctx, "ansible-test"); err == nil && ok {
			got = v
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(got) != "through the Sentinels" {
		t.Fatalf("the replica has %q", got)
	}
	time.Sleep(500 * time.Millisecond) // the Sentinels rewrite their files
	out, err = ansiblePlaybookInv(t, "redis.yml", invPath, vars)
	if err != nil || strings.Count(out, "changed=0") != 3 {
		t.Fatalf("second run: %v, want changed=0 on each host\n%s", err, out)
	}
}

// The whole site.yml at once, on an inventory of five "hosts" (an MX, a
// mailbox host, three Redis), each in a temporary root of its own; then
// everything starts from exactly the files the playbook wrote: Redis and
// the Sentinels over TLS, wehr on both hosts with the store through the
// Sentinels, Postfix on both, Dovecot on the mailbox host. Mail flows:
// a signed message over STARTTLS to the MX is checked there and reaches
// the mailbox in Dovecot; a spoof is refused at the MX; a user's message
// over 587 leaves the mailbox host signed; wrong passwords at Dovecot are
// counted by wehr's auth policy service until the login is refused.
func TestAnsibleSite(t *testing.T) {
	base := filepath.Join(w.dir, "site")
	os.MkdirAll(base, 0o755)
	ps, err := FreePorts(16)
	if err != nil {
		t.Fatal(err)
	}
	port := func() int { p := ps[0]; ps = ps[1:]; return p }
	mxSMTP, mailSMTP, mailSub, mailSubs := port(), port(), port(), port()
	imap, imaps, pop3s, sieve, lmtp, authPort := port(), port(), port(), port(), port(), port()
	var redisPorts, sentinelPorts []int
	for range 3 {
		redisPorts = append(redisPorts, port())
		sentinelPorts = append(sentinelPorts, port())
	}
	redisTLS, mailTLS := filepath.Join(base, "tls-redis"), filepath.Join(base, "tls-mail")
	os.MkdirAll(redisTLS, 0o755)
	os.MkdirAll(mailTLS, 0o755)
	ca, rcert, rkey := redisCA(t, redisTLS)
	mailCert, mailKey := selfSigned(t, mailTLS, "mail.example.test")
	root := func(h string) string { return filepath.Join(base, h) }
	var sentinels []string
	for _, p := range sentinelPorts {
		sentinels = append(sentinels, fmt.Sprintf("127.0.0.1:%d", p))
	}
	wehrCfg := func(h string) map[string]any {
		q := root(h) + "/var/spool/postfix/wehr"
		return map[string]any{
			"hostname": h + ".example.test", "authserv_id": h + ".example.test",
			"log":     map[string]any{"level": "info"},
			"dns":     map[string]any{"timeout": "1s", "attempts": 1},
			"milter":  map[string]any{"listen": "unix:" + q + "/milter.sock", "socket_group": "postfix", "trusted_networks": []string{}},
			"policyd": map[string]any{"listen": "unix:" + q + "/policy.sock", "socket_group": "postfix", "skip_networks": []string{}, "greylist": map[string]any{"enabled": false}},
			"store": map[string]any{"backend": "redis", "admin_socket": root(h) + "/run/wehr/admin.sock",
				"redis": map[string]any{"mode": "sentinel", "master_name": "wehr", "addrs": sentinels, "timeout": "1s",
					"tls": map[string]any{"enabled": true, "ca_file": ca}}},
			"reports": map[string]any{"record": false},
		}
	}
	mx, mail := wehrCfg("mx1"), wehrCfg("mail1")
	mail["authpolicy"] = map[string]any{"listen": fmt.Sprintf("inet:127.0.0.1:%d", authPort), "api_key": "site-key", "login_hash_key": "k",
		"delay_after": 1, "max_delay": "1s", "block_after": 3}
	common := func(h string) map[string]any {
		return map[string]any{
			"ansible_connection": "local", "wehr_root": root(h), "postfix_wehr_root": root(h), "dovecot_wehr_root": root(h), "redis_root": root(h),
			"wehr_service_manager": "none", "postfix_wehr_service_manager": "none", "dovecot_wehr_service_manager": "none", "redis_service_manager": "none",
			"wehr_manage_user": false, "wehr_user": "nobody", "wehr_group": "nogroup",
			"wehr_dns_records_dir":  filepath.Join(base, "dns-records"),
			"postfix_wehr_hostname": h + ".example.test", "postfix_wehr_maillog_file": root(h) + "/var/log/maillog",
			"postfix_wehr_inet_interfaces": "127.0.0.1", "postfix_wehr_tls_cert": mailCert, "postfix_wehr_tls_key": mailKey,
			"postfix_wehr_virtual_domains": []string{"example.test"}, "postfix_wehr_virtual_mailboxes": []string{"alice@example.test", "bob@example.test"},
			"postfix_wehr_lmtp":       fmt.Sprintf("inet:127.0.0.1:%d", lmtp),
			"postfix_wehr_main_extra": map[string]string{"smtp_dns_support_level": "disabled", "lmtp_host_lookup": "native"},
		}
	}
	hosts := map[string]any{}
	h := common("mx1")
	h["wehr_config"] = mx
	h["postfix_wehr_smtp_service"] = fmt.Sprintf("127.0.0.1:%d", mxSMTP)
	h["postfix_wehr_submission_service"], h["postfix_wehr_submissions_service"] = "", ""
	hosts["mx1"] = h
	h = common("mail1")
	h["wehr_config"] = mail
	h["wehr_dkim_domains"] = []string{"example.test"}
	h["wehr_senders"] = []string{"alice@example.test  alice@example.test"}
	h["postfix_wehr_smtp_service"] = fmt.Sprintf("127.0.0.1:%d", mailSMTP)
	h["postfix_wehr_submission_service"] = fmt.Sprintf("127.0.0.1:%d", mailSub)
	h["postfix_wehr_submissions_service"] = fmt.Sprintf("127.0.0.1:%d", mailSubs)
	h["postfix_wehr_sasl_path"] = root("mail1") + "/run/dovecot/auth-postfix"
	for k, v := range map[string]any{"dovecot_wehr_instance_name": "wehr-site", "dovecot_wehr_log_path": root("mail1") + "/var/log/dovecot.log",
		"dovecot_wehr_listen": "127.0.0.1", "dovecot_wehr_imap_port": imap, "dovecot_wehr_imaps_port": imaps, "dovecot_wehr_pop3s_port": pop3s,
		"dovecot_wehr_sieve_port": sieve, "dovecot_wehr_lmtp_port": lmtp, "dovecot_wehr_auth_socket": "/run/dovecot/auth-postfix",
		"dovecot_wehr_tls_cert": mailCert, "dovecot_wehr_tls_key": mailKey,
		"dovecot_wehr_auth_policy_url":     fmt.Sprintf("http://127.0.0.1:%d/", authPort),
		"dovecot_wehr_auth_policy_api_key": "site-key", "dovecot_wehr_auth_policy_nonce": "site-nonce"} {
		h[k] = v
	}
	hosts["mail1"] = h
	for i := range 3 {
		name := fmt.Sprintf("redis%d", i+1)
		h := common(name)
		h["redis_port"], h["redis_tls_port"], h["redis_sentinel_port"], h["redis_sentinel_tls_port"] = 0, redisPorts[i], 0, sentinelPorts[i]
		h["redis_tls_cert"], h["redis_tls_key"], h["redis_tls_ca"] = rcert, rkey, ca
		h["redis_sentinel"], h["redis_sentinel_master_host"], h["redis_master_port"] = true, "127.0.0.1", redisPorts[0]
		if i > 0 {
			h["redis_master_host"] = "127.0.0.1"
		}
		hosts[name] = h
	}
	inv := map[string]any{"all": map[string]any{"children": map[string]any{
		"mx":      map[string]any{"hosts": map[string]any{"mx1": hosts["mx1"]}},
		"mailbox": map[string]any{"hosts": map[string]any{"mail1": hosts["mail1"]}},
		"redis":   map[string]any{"hosts": map[string]any{"redis1": hosts["redis1"], "redis2": hosts["redis2"], "redis3": hosts["redis3"]}},
	}}}
	invJSON, _ := json.Marshal(inv)
	invPath := filepath.Join(base, "inventory.json")
	os.WriteFile(invPath, invJSON, 0o644)
	// The users of the mailbox host, and their homes.
	os.MkdirAll(root("mail1")+"/etc/dovecot", 0o755)
	os.MkdirAll(root("mail1")+"/var/mail", 0o755)
	os.MkdirAll(root("mail1")+"/var/log", 0o755)
	os.MkdirAll(root("mx1")+"/var/log", 0o755)
	var users strings.Builder
	for _, u := range []string{"alice", "bob"} {
		fmt.Fprintf(&users, "%s@example.test:{PLAIN}%spw:5000:5000::%s/var/mail/%s::\n", u, u, root("mail1"), u)
	}
	os.WriteFile(root("mail1")+"/etc/dovecot/users", []byte(users.String()), 0o644)
	exec.Command("chown", "-R", "5000:5000", root("mail1")+"/var/mail").Run()

	start := time.Now()
	out, err := ansiblePlaybookSite(t, invPath, map[string]any{"wehr_binary_src": w.wehr.Bin})
	t.Logf("site.yml first run: %v", time.Since(start).Round(100*time.Millisecond))
	if err != nil {
		t.Fatalf("site.yml: %v\n%s", err, out)
	}

	// Start everything from the files.
	var procs []*exec.Cmd
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	run := func(logName string, name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		logf, _ := os.Create(filepath.Join(base, logName))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	for i := range 3 {
		r := root(fmt.Sprintf("redis%d", i+1))
		run(fmt.Sprintf("redis%d.log", i+1), "redis-server", r+"/etc/redis/redis.conf")
		run(fmt.Sprintf("sentinel%d.log", i+1), "redis-server", r+"/etc/redis/sentinel.conf", "--sentinel")
	}
	for _, p := range append(append([]int{}, redisPorts...), sentinelPorts...) {
		if err := WaitListening(p, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, hn := range []string{"mx1", "mail1"} {
		os.MkdirAll(root(hn)+"/run/wehr", 0o755)
		run(hn+"-wehr.log", root(hn)+"/usr/local/bin/wehr", "--config", root(hn)+"/etc/wehr/wehr.yaml", "--resolver", w.dns.Addr(), "serve")
		if err := WaitSocket(root(hn)+"/var/spool/postfix/wehr/milter.sock", 10*time.Second); err != nil {
			t.Fatalf("%s wehr: %v\n%s", hn, err, Tail(filepath.Join(base, hn+"-wehr.log"), 20))
		}
	}
	errf, _ := os.Create(filepath.Join(base, "dovecot.stderr"))
	dv := exec.Command(programs["dovecot"], "-c", root("mail1")+"/etc/dovecot/dovecot.conf")
	dv.Stdout, dv.Stderr = errf, errf
	if err := dv.Run(); err != nil {
		t.Fatalf("dovecot: %v %s", err, readFile(errf.Name()))
	}
	stops = append(stops, func() {
		exec.Command(programs["dovecot"], "-c", root("mail1")+"/etc/dovecot/dovecot.conf", "stop").Run()
	})
	for _, hn := range []string{"mx1", "mail1"} {
		if out, err := exec.Command("postfix", "-c", root(hn)+"/etc/postfix", "start").CombinedOutput(); err != nil {
			t.Fatalf("%s postfix: %v %s", hn, err, out)
		}
		hn := hn
		stops = append(stops, func() { exec.Command("postfix", "-c", root(hn)+"/etc/postfix", "stop").Run() })
	}
	for _, p := range []int{mxSMTP, mailSub, lmtp, imaps, authPort} {
		if err := WaitListening(p, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	insecure := &tls.Config{InsecureSkipVerify: true}
	smtpTo := func(port int, implicit bool, auth bool, from, to, data string) error {
		t.Helper()
		var conn net.Conn
		var err error
		if implicit {
			conn, err = tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), insecure)
		} else {
			conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		}
		if err != nil {
			return err
		}
		c, err := smtp.NewClient(conn, "mail.example.test")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Hello("client.example"); err != nil {
			return err
		}
		if !implicit {
			if err := c.StartTLS(insecure); err != nil {
				return err
			}
		}
		if auth {
			if err := c.Auth(smtp.PlainAuth("", "alice@example.test", "alicepw", "mail.example.test")); err != nil {
				return err
			}
		}
		if err := c.Mail(from); err != nil {
			return err
		}
		if err := c.Rcpt(to); err != nil {
			return err
		}
		wc, err := c.Data()
		if err != nil {
			return err
		}
		io.WriteString(wc, data)
		return wc.Close()
	}
	waitMaildir := func(user, marker string) string {
		t.Helper()
		for range 100 {
			files, _ := filepath.Glob(root("mail1") + "/var/mail/" + user + "/Maildir/new/*")
			for _, f := range files {
				if b := readFile(f); strings.Contains(b, marker) {
					return b
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s never reached %s\nmx maillog:\n%s\nmail1 maillog:\n%s", marker, user, Tail(root("mx1")+"/var/log/maillog", 10), Tail(root("mail1")+"/var/log/maillog", 10))
		return ""
	}
	// Inbound at the MX, delivered at the mailbox host.
	data, marker := message(t, "Alice <a@good.example>", "", "Through the whole site.\r\n")
	if err := smtpTo(mxSMTP, false, false, "bounce@good.example", "alice@example.test", w.sign(t, data, "good.example", "sel")); err != nil {
		t.Fatalf("MX: %v\n%s", err, Tail(root("mx1")+"/var/log/maillog", 10))
	}
	if got := waitMaildir("alice", marker); !strings.Contains(got, "Authentication-Results: mx1.example.test") || !strings.Contains(got, "dmarc=pass") {
		t.Errorf("no A-R of the MX:\n%.800s", got)
	}
	spoof, _ := message(t, "CEO <ceo@bank.example>", "", "Pay now.\r\n")
	var te *textproto.Error
	if err := smtpTo(mxSMTP, false, false, "x@evil.example", "alice@example.test", spoof); !errors.As(err, &te) || te.Code != 550 {
		t.Errorf("spoof at the MX: %v", err)
	}
	// Submission at the mailbox host, signed by its wehr.
	data, marker = message(t, "Alice <alice@example.test>", "", "Signed by the mailbox host.\r\n")
	if err := smtpTo(mailSub, false, true, "alice@example.test", "bob@example.test", data); err != nil {
		t.Fatalf("submission: %v\n%s", err, Tail(root("mail1")+"/var/log/maillog", 10))
	}
	if got := waitMaildir("bob", marker); !strings.Contains(got, "DKIM-Signature:") || !strings.Contains(got, "d=example.test") {
		t.Errorf("not signed:\n%.800s", got)
	}
	// Password guessing at Dovecot, counted by wehr's auth policy service.
	var last string
	for range 4 {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", imaps), insecure)
		if err != nil {
			t.Fatal(err)
		}
		l := newLineConn(t, c)
		l.until("* OK")
		l.send(`a LOGIN "alice@example.test" "wrong"`)
		last = l.until("a ")
		c.Close()
	}
	c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", imaps), insecure)
	if err != nil {
		t.Fatal(err)
	}
	l := newLineConn(t, c)
	l.until("* OK")
	l.send(`a LOGIN "alice@example.test" "alicepw"`)
	if got := l.until("a "); !strings.Contains(got, "Too many failed logins") {
		t.Errorf("after wrong passwords (last: %q), the right one: %q", last, got)
	}
	c.Close()
	for _, hn := range []string{"mx1", "mail1"} {
		if log := readFile(filepath.Join(base, hn+"-wehr.log")); strings.Contains(log, "store unavailable") {
			t.Errorf("%s: wehr could not reach Redis through the Sentinels:\n%s", hn, Tail(filepath.Join(base, hn+"-wehr.log"), 5))
		}
	}
	start = time.Now()
	out, err = ansiblePlaybookSite(t, invPath, map[string]any{"wehr_binary_src": w.wehr.Bin})
	t.Logf("site.yml second run: %v", time.Since(start).Round(100*time.Millisecond))
	if err != nil || strings.Count(out, "changed=0") != 5 {
		t.Fatalf("second run: %v, want changed=0 on each of the 5 hosts\n%s", err, out)
	}
}

// ansiblePlaybookSite runs ansible/site.yml with an inventory.
func ansiblePlaybookSite(t *testing.T, inventory string, vars map[string]any) (string, error) {
	t.Helper()
	dir := t.TempDir()
	vf := filepath.Join(dir, "vars.json")
	b, _ := json.Marshal(vars)
	os.WriteFile(vf, b, 0o644)
	cmd := exec.Command("ansible-playbook", "-i", inventory, "-e", "@"+vf, filepath.Join("..", "ansible", "site.yml"))
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "rtmp"), "ANSIBLE_ROLES_PATH="+filepath.Join("..", "ansible", "roles"),
		"ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3", "ANSIBLE_STDOUT_CALLBACK=default", "ANSIBLE_PIPELINING=1", "ANSIBLE_FORKS=5",
		// The test runs as root, and the machine may have no sudo.
		"ANSIBLE_BECOME_METHOD=su")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
