package integration

import (
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAnsiblePostmulti applies the postfix_wehr role with its bulk
// instance where a real host has Postfix: /etc/postfix, /var/spool/postfix
// and /var/lib/postfix, so that the role's postmulti step runs as on a
// mail host (postmulti manages the primary instance there only). The
// three directories are this test's own, bind-mounted over the real ones
// in a mount namespace of its own: the machine's Postfix is not touched.
// Then `postfix start` starts both instances (multi_instance_wrapper),
// postmulti lists the bulk instance as enabled, mail handed to it is
// delivered, and a second run changes nothing.
func TestAnsiblePostmulti(t *testing.T) {
	base := filepath.Join(w.dir, "postmulti")
	etc, spool, lib := base+"/etc-postfix", base+"/spool-postfix", base+"/lib-postfix"
	for _, d := range []string{etc, spool, lib, base + "/log"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The package's files Postfix's scripts read (postfix-files,
	// dynamicmaps.cf), as on a host where the package is installed.
	if out, err := exec.Command("cp", "-a", "/etc/postfix/.", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/postfix: %v %s", err, out)
	}
	os.Remove(etc + "/main.cf")
	if out, err := exec.Command("chown", "postfix:postfix", lib).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ns, err := NewMountNamespace(map[string]string{etc: "/etc/postfix", spool: "/var/spool/postfix", lib: "/var/lib/postfix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	via, in := ns.Via, ns.Run
	cert, key := selfSigned(t, t.TempDir(), "mx.example.test")
	ps, err := FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	log := base + "/log/maillog"
	vars := map[string]any{
		"postfix_wehr_service_manager": "none", "postfix_wehr_hostname": "mx.example.test",
		"postfix_wehr_maillog_file": log, "postfix_wehr_inet_interfaces": "127.0.0.1",
		"postfix_wehr_smtp_service":        fmt.Sprintf("127.0.0.1:%d", ps[0]),
		"postfix_wehr_submission_service":  fmt.Sprintf("127.0.0.1:%d", ps[1]),
		"postfix_wehr_submissions_service": fmt.Sprintf("127.0.0.1:%d", ps[2]),
		"postfix_wehr_virtual_domains":     []string{"example.test"},
		"postfix_wehr_virtual_mailboxes":   []string{"alice@example.test", "carol@example.test"},
		"postfix_wehr_lmtp":                fmt.Sprintf("inet:127.0.0.1:%d", w.dovecot.LMTPPort),
		"postfix_wehr_sasl_path":           w.dovecot.SASLPath(),
		"postfix_wehr_tls_cert":            cert, "postfix_wehr_tls_key": key,
		"postfix_wehr_main_extra": map[string]string{"smtp_dns_support_level": "disabled", "lmtp_host_lookup": "native"},
		"postfix_wehr_bulk":       true, "postfix_wehr_bulk_listen": fmt.Sprintf("127.0.0.1:%d", ps[3]),
		"postfix_wehr_bulk_config_dir": base + "/etc-postfix-bulk", "postfix_wehr_bulk_queue_dir": base + "/spool-postfix-bulk",
		"postfix_wehr_bulk_data_dir": base + "/lib-postfix-bulk",
		"postfix_wehr_bulk_main_extra": map[string]string{"smtp_dns_support_level": "disabled", "lmtp_host_lookup": "native",
			"transport_maps": fmt.Sprintf("inline:{ example.test=lmtp:inet:127.0.0.1:%d }", w.dovecot.LMTPPort)},
	}
	out, err := ansiblePlaybookVia(t, via, "postfix.yml", "localhost,", vars)
	if err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "TASK [postfix_wehr : Create the bulk instance with postmulti]") || !strings.Contains(readFile(etc+"/main.cf"), "multi_instance_directories = "+base+"/etc-postfix-bulk") {
		t.Fatalf("postmulti did not register the instance:\n%s\n%s", out, readFile(etc+"/main.cf"))
	}
	if out, err := in("postfix", "start"); err != nil {
		t.Fatalf("postfix start: %v %s\n%s", err, out, Tail(log, 20))
	}
	defer in("postfix", "stop") //nolint:errcheck
	for _, p := range []int{ps[0], ps[3]} {
		if err := WaitListening(p, 10*time.Second); err != nil {
			t.Fatalf("%v\n%s", err, Tail(log, 20))
		}
	}
	if l, err := in("postmulti", "-l"); err != nil || !regexpMatch(`(?m)^postfix-bulk\s+mta\s+y\s+`+base+`/etc-postfix-bulk`, l) {
		t.Errorf("postmulti -l: %v\n%s", err, l)
	}
	// Mail handed to the bulk instance (as wehr's FILTER does) is
	// delivered by it.
	data, marker := message(t, "Alice <alice@example.test>", "", "Through the instance postmulti made.\r\n")
	if err := smtp.SendMail(fmt.Sprintf("127.0.0.1:%d", ps[3]), nil, "alice@example.test", []string{"carol@example.test"}, []byte(data)); err != nil {
		t.Fatalf("to the bulk instance: %v\n%s", err, Tail(log, 20))
	}
	m, err := w.dovecot.WaitMessage("carol@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, Tail(log, 20))
	}
	if rcv := strings.Join(header(m.Data, "Received"), "\n"); !strings.Contains(rcv, "by bulk.mx.example.test") {
		t.Errorf("not through the bulk instance: %s", rcv)
	}
	out, err = ansiblePlaybookVia(t, via, "postfix.yml", "localhost,", vars)
	if err != nil || !strings.Contains(out, "changed=0") {
		t.Errorf("second run: %v, want changed=0\n%s", err, out)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }
