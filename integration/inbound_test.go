package integration

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store/storetest"
)

// world is the mail system every inbound test talks to: one MX (Postfix
// with wehr as its milter), Dovecot behind it, and the DNS of the senders.
type world struct {
	dir      string
	dns      *dnstest.Server
	postfix  *Postfix
	dovecot  *Dovecot
	wehr     *Wehr
	redis    *storetest.Redis
	bulk     *Postfix
	bulkPort int
	keys     map[string]crypto.Signer // DKIM keys by domain
}

var w *world

const authservID = "mx1.example.test"

// The senders' DNS:
//   - good.example: a sender that does everything right, at 192.0.2.10.
//   - bank.example: p=reject, SPF -all for 198.51.100.0/24, signs.
//   - evil.example: a forger whose own SPF passes, at 203.0.113.5.
//   - fwd.example: a forwarder at 192.0.2.20.
//   - lists.example.net: a mailing list at 192.0.2.30 that re-signs.
const senderZone = `
good.example.              300 IN TXT "v=spf1 ip4:192.0.2.10 -all"
_dmarc.good.example.       300 IN TXT "v=DMARC1; p=reject"
10.2.0.192.in-addr.arpa.   300 IN PTR mail.good.example.
mail.good.example.         300 IN A   192.0.2.10
bank.example.              300 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.bank.example.       300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@bank.example"
evil.example.              300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
5.113.0.203.in-addr.arpa.  300 IN PTR mail.evil.example.
mail.evil.example.         300 IN A   203.0.113.5
fwd.example.               300 IN TXT "v=spf1 ip4:192.0.2.20 -all"
20.2.0.192.in-addr.arpa.   300 IN PTR mx.fwd.example.
mx.fwd.example.            300 IN A   192.0.2.20
lists.example.net.         300 IN TXT "v=spf1 ip4:192.0.2.30 -all"
30.2.0.192.in-addr.arpa.   300 IN PTR mail.lists.example.net.
mail.lists.example.net.    300 IN A   192.0.2.30
_dmarc.example.test.       300 IN TXT "v=DMARC1; p=reject"
66.113.0.203.bl.test.      300 IN A   127.0.0.2
example.                   300 IN SOA ns.example. h.example. 1 3600 600 86400 60
`

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := CheckPrograms(); err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	var err error
	w, err = setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: setup:", err)
		if w != nil {
			w.teardown()
		}
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- wehr log:\n%s\n--- Postfix maillog:\n%s\n--- Dovecot log:\n%s\n",
			Tail(w.wehr.Log, 40), Tail(w.postfix.Maillog(), 40), Tail(w.dovecot.Log(), 20))
	}
	w.teardown()
	return code
}

func setup() (*world, error) {
	dir, err := WorkDir("wi")
	if err != nil {
		return nil, err
	}
	wo := &world{dir: dir, keys: map[string]crypto.Signer{}}
	wo.dns, err = dnstest.Start(senderZone)
	if err != nil {
		return wo, err
	}
	for _, d := range []string{"good.example", "bank.example", "lists.example.net", "fwd.example"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return wo, err
		}
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		wo.keys[d] = k
		wo.dns.AddTXT("sel._domainkey."+d, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	wo.keys["ed.good.example"] = ed
	wo.dns.AddTXT("ed._domainkey.good.example", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(ed.Public().(ed25519.PublicKey)))

	// wehr's own signing keys, for the customers' domain example.test,
	// published in the test DNS.
	keysDir := filepath.Join(dir, "dkim")
	store := &dkimkeys.Store{Dir: keysDir}
	for sel, a := range map[string]string{"2026a-rsa": dkimkeys.RSA, "2026a-ed": dkimkeys.Ed25519} {
		k, err := store.Generate("example.test", sel, a, dkimkeys.Active, time.Now())
		if err != nil {
			return wo, err
		}
		wo.dns.AddTXT(k.RecordName(), k.Record())
	}
	senderMap := filepath.Join(dir, "senders")
	if err := os.WriteFile(senderMap, []byte("alice@example.test  alice@example.test\nbob@example.test  bob@example.test\n"), 0o644); err != nil {
		return wo, err
	}

	ports := map[string]int{}
	wo.redis, err = storetest.NewRedis(filepath.Join(dir, "redis"), "")
	if err != nil {
		return wo, err
	}
	for _, p := range []string{"smtp", "submission", "lmtp", "bulk"} {
		if ports[p], err = FreePort(); err != nil {
			return wo, err
		}
	}
	wo.bulkPort = ports["bulk"]
	bin, err := BuildWehr(dir)
	if err != nil {
		return wo, err
	}
	wo.dovecot, err = StartDovecot(filepath.Join(dir, "dovecot"), DovecotConfig{
		LMTPPort: ports["lmtp"],
		Users:    []string{"alice@example.test", "bob@example.test", "carol@example.test", "dmarc@example.test"},
		// The README's rule: quarantined mail goes to Junk.
		SieveBefore: sieveJunkRule,
	})
	if err != nil {
		return wo, err
	}
	// The documented single-host wiring: unix sockets in Postfix's queue
	// directory, group postfix, named relative to it in main.cf.
	sockDir := filepath.Join(dir, "mx1", "queue", "wehr")
	if err := os.MkdirAll(filepath.Dir(sockDir), 0o755); err != nil { // as Postfix makes it
		return wo, err
	}
	if err := os.Mkdir(sockDir, 0o750); err != nil {
		return wo, err
	}
	if out, err := exec.Command("chgrp", "postfix", sockDir).CombinedOutput(); err != nil {
		return wo, fmt.Errorf("chgrp %s: %v: %s", sockDir, err, out)
	}
	config := fmt.Sprintf(`authserv_id: %[1]s
hostname: %[1]s
log:
  level: debug
dns:
  timeout: 1s
  attempts: 1
milter:
  listen: unix:%[2]s/milter.sock
  socket_group: postfix
dkim:
  keys_dir: %[3]s
  sender_map: %[4]s
store:
  backend: redis
  redis:
    mode: single
    addrs: [%[5]s]
    timeout: 200ms
policyd:
  listen: unix:%[2]s/policy.sock
  socket_group: postfix
  local_domains: [example.test]
  dns_lists: [{zone: bl.test, weight: 5}]
  greylist:
    delay: 2s
    window: 1h
  submission:
    classes:
      default: {messages: 100, recipients: 100, window: 1h}
      tight: {messages: 2, window: 1h}
    user_classes: {bob@example.test: tight}
    bulk:
      filter: "smtp:[127.0.0.1]:%[6]d"
      min_recipients: 3
`, authservID, sockDir, keysDir, senderMap, wo.redis.Addr, ports["bulk"])
	wo.wehr, err = NewWehr(bin, dir, config, wo.dns.Addr(), 0)
	if err != nil {
		return wo, err
	}
	wo.wehr.MilterSocket = filepath.Join(sockDir, "milter.sock")
	if err := wo.wehr.Start(); err != nil {
		return wo, err
	}
	wo.postfix, err = StartPostfix(filepath.Join(dir, "mx1"), PostfixConfig{
		Hostname: authservID, SMTPPort: ports["smtp"], MilterAddr: "unix:wehr/milter.sock",
		LMTPPort: ports["lmtp"], Domain: "example.test", Users: []string{"alice", "bob", "carol", "dmarc", "reports", "tls-reports"},
		SubmissionPort: ports["submission"], SASLPath: wo.dovecot.SASLPath(),
		PolicyAddr: "unix:wehr/policy.sock",
	})
	if err != nil {
		return wo, err
	}
	// The bulk instance: a second Postfix that newsletters leave through.
	wo.bulk, err = StartPostfix(filepath.Join(dir, "bulk"), PostfixConfig{
		Hostname: "bulk.example.test", SMTPPort: ports["bulk"], LMTPPort: ports["lmtp"], Domain: "example.test", Users: []string{"alice", "bob", "carol", "dmarc", "reports", "tls-reports"},
	})
	if err != nil {
		return wo, err
	}
	return wo, nil
}

// sieveJunkRule is the rule the README gives admins.
const sieveJunkRule = `require ["fileinto", "mailbox"];
if exists "X-Wehr-Quarantine" {
  fileinto :create "Junk";
  stop;
}
`

func (wo *world) teardown() {
	if wo.postfix != nil {
		wo.postfix.Stop()
	}
	if wo.bulk != nil {
		wo.bulk.Stop()
	}
	if wo.wehr != nil {
		wo.wehr.Stop()
	}
	if wo.dovecot != nil {
		wo.dovecot.Stop()
	}
	if wo.dns != nil {
		wo.dns.Close()
	}
	if wo.redis != nil {
		wo.redis.Stop()
	}
	if os.Getenv("WEHR_KEEP") == "" {
		os.RemoveAll(wo.dir)
	}
}

func (wo *world) smtpAddr() string { return fmt.Sprintf("127.0.0.1:%d", wo.postfix.SMTPPort) }

func (wo *world) submissionAddr() string {
	return fmt.Sprintf("127.0.0.1:%d", wo.postfix.SubmissionPort)
}

// message builds a message with a unique marker in its Subject.
func message(t *testing.T, from, extra, body string) (data, marker string) {
	marker = fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	data = "From: " + from + "\r\nTo: alice@example.test\r\nSubject: " + marker + "\r\n" +
		"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + marker + "@test>\r\n" + extra + "\r\n" + body
	return data, marker
}

// sign adds a DKIM signature of domain (selector sel, or ed for the
// Ed25519 key).
func (wo *world) sign(t *testing.T, msg, domain, selector string) string {
	t.Helper()
	key := wo.keys[domain]
	if selector == "ed" {
		key = wo.keys["ed."+domain]
	}
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "From", "To", "Subject", "Date", "Message-ID", "List-Id"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func (wo *world) send(t *testing.T, c Client, from, data string) Reply {
	t.Helper()
	r, err := Send(wo.smtpAddr(), c, from, []string{"alice@example.test"}, data)
	if err != nil {
		t.Fatalf("SMTP: %v", err)
	}
	return r
}

// header returns the values of a field in a delivered message's header.
func header(msg, name string) []string {
	head, _, _ := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
	var out []string
	lines := strings.Split(head, "\n")
	for i := 0; i < len(lines); i++ {
		n, v, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(n, name) {
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			v += " " + strings.TrimSpace(lines[i])
		}
		out = append(out, strings.TrimSpace(v))
	}
	return out
}

// fieldOrder lists the header field names of a message, in order.
func fieldOrder(msg string) []string {
	head, _, _ := strings.Cut(strings.ReplaceAll(msg, "\r\n", "\n"), "\n\n")
	var out []string
	for _, l := range strings.Split(head, "\n") {
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		n, _, _ := strings.Cut(l, ":")
		out = append(out, n)
	}
	return out
}

func ours(ars []string) []string {
	var out []string
	for _, v := range ars {
		if strings.HasPrefix(strings.ToLower(v), authservID+";") || strings.HasPrefix(strings.ToLower(v), authservID+" ") {
			out = append(out, v)
		}
	}
	return out
}

func TestInboundPass(t *testing.T) {
	data, marker := message(t, "News <news@good.example>", "", "Hello Alice.\r\n")
	data = w.sign(t, w.sign(t, data, "good.example", "sel"), "good.example", "ed")
	r := w.send(t, Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}, "bounce@good.example", data)
	if !r.OK() {
		t.Fatalf("not accepted: %v", r)
	}
	m, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ar := ours(header(m.Data, "Authentication-Results"))
	if len(ar) != 1 {
		t.Fatalf("want one A-R of ours, got %q", ar)
	}
	for _, want := range []string{"spf=pass", "smtp.mailfrom=bounce@good.example", "dkim=pass", "header.a=rsa-sha256", "header.a=ed25519-sha256",
		"dmarc=pass", "header.from=good.example", "iprev=pass", "policy.iprev=192.0.2.10"} {
		if !strings.Contains(ar[0], want) {
			t.Errorf("A-R lacks %q: %s", want, ar[0])
		}
	}
	// Ours is above Postfix's own Received (RFC 8601 5: at the top of
	// what this ADMD added).
	order := fieldOrder(m.Data)
	arAt, rcvdAt := -1, -1
	for i, n := range order {
		if strings.EqualFold(n, "Authentication-Results") && arAt < 0 {
			arAt = i
		}
	}
	rcvds := header(m.Data, "Received")
	for i, n := range order {
		if strings.EqualFold(n, "Received") {
			// The first Received by Postfix on the MX.
			idx := 0
			for j := 0; j < i; j++ {
				if strings.EqualFold(order[j], "Received") {
					idx++
				}
			}
			if strings.Contains(rcvds[idx], "by "+authservID+" (Postfix)") {
				rcvdAt = i
				break
			}
		}
	}
	if arAt < 0 || rcvdAt < 0 || arAt > rcvdAt {
		t.Fatalf("A-R at %d, Postfix's Received at %d, want A-R above: %v", arAt, rcvdAt, order)
	}
	if len(header(m.Data, "X-Wehr-Quarantine")) != 0 {
		t.Error("passing mail carries the quarantine marker")
	}
}

func TestSpoofRefused(t *testing.T) {
	data, _ := message(t, "CEO <ceo@bank.example>", "", "Please pay invoice 42 today.\r\n")
	mark := logMark()
	r := w.send(t, Client{IP: "203.0.113.5", Name: "mail.evil.example", Helo: "mail.evil.example"}, "x@evil.example", data)
	// The evidence: the bank's SPF fails for the client, and (pass
	// history in Redis) this network never sent passing mail for it.
	want := "5.7.1 Message rejected: bank.example publishes DMARC policy reject and this message is not authenticated by bank.example (its SPF record does not permit 203.0.113.5; 203.0.113.5 never sent authenticated mail for bank.example here; no DKIM signature of bank.example)"
	if r.Stage != "END" || r.Code != 550 || r.Text != want {
		t.Fatalf("reply %v\nwant END: 550 %s", r, want)
	}
	// Refused in the dialogue, it was never queued: what remains to
	// check is the decision in both logs.
	waitLog(t, mark, `msg="milter: refused"`, "client=203.0.113.5", "from_domain=bank.example", "check=dmarc")
	if !w.postfix.LogContains("milter-reject: END-OF-MESSAGE", "5.7.1 Message rejected: bank.example") {
		t.Error("Postfix did not log the milter reject")
	}
}

func TestForwardedBrokenSignatureQuarantined(t *testing.T) {
	data, marker := message(t, "Statements <statements@bank.example>", "", "Your statement is ready.\r\n")
	data = w.sign(t, data, "bank.example", "sel")
	data += "-- \r\nForwarded by fwd.example\r\n" // breaks the bank's body hash
	r := w.send(t, Client{IP: "192.0.2.20", Name: "mx.fwd.example", Helo: "mx.fwd.example"}, "alice+fwd@fwd.example", data)
	if !r.OK() {
		t.Fatalf("not accepted: %v", r)
	}
	m, err := w.dovecot.WaitMessage("alice@example.test", "Junk", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if q := header(m.Data, "X-Wehr-Quarantine"); len(q) != 1 || !strings.Contains(q[0], "bank.example") {
		t.Errorf("marker %q", q)
	}
	ar := ours(header(m.Data, "Authentication-Results"))
	if len(ar) != 1 || !strings.Contains(ar[0], "dkim=fail") || !strings.Contains(ar[0], "dmarc=fail") || !strings.Contains(ar[0], "overrides other") {
		t.Errorf("A-R %q", ar)
	}
}

func TestMailingList(t *testing.T) {
	// The bank's message as a list delivers it: List-Id added, a footer
	// (the bank's signature breaks), re-signed by the list, sent from the
	// list's server with the list's MAIL FROM.
	data, marker := message(t, "Statements <statements@bank.example>", "", "Quarterly news.\r\n")
	data = w.sign(t, data, "bank.example", "sel")
	data = "List-Id: Bank customers <customers.lists.example.net>\r\nList-Post: <mailto:customers@lists.example.net>\r\n" + data
	data += "-- \r\nYou are subscribed to customers@lists.example.net\r\n"
	data = w.sign(t, data, "lists.example.net", "sel")
	r := w.send(t, Client{IP: "192.0.2.30", Name: "mail.lists.example.net", Helo: "mail.lists.example.net"}, "customers-bounces@lists.example.net", data)
	if !r.OK() {
		t.Fatalf("list mail not accepted: %v", r)
	}
	m, err := w.dovecot.WaitMessage("alice@example.test", "Junk", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ar := ours(header(m.Data, "Authentication-Results"))
	if len(ar) != 1 || !strings.Contains(ar[0], "overrides mailing_list") || !strings.Contains(ar[0], "list lists.example.net authenticated") {
		t.Errorf("A-R %q", ar)
	}

	// The same headers from a host the list does not authenticate: no
	// override, and the spoof is refused.
	data, _ = message(t, "Statements <statements@bank.example>", "List-Id: Bank customers <customers.lists.example.net>\r\nList-Post: <mailto:customers@lists.example.net>\r\n", "Pay here.\r\n")
	r = w.send(t, Client{IP: "203.0.113.5", Name: "mail.evil.example", Helo: "mail.evil.example"}, "x@evil.example", data)
	if r.Code != 550 || !strings.Contains(r.Text, "bank.example publishes DMARC policy reject") {
		t.Fatalf("forged list headers: %v", r)
	}
}

func TestForgedAuthenticationResultsRemoved(t *testing.T) {
	forged := func(where string) string {
		return "Authentication-Results: " + authservID + "; spf=pass smtp.mailfrom=ceo@bank.example; dmarc=pass header.from=bank.example (forged " + where + ")\r\n"
	}
	data, marker := message(t, "News <news@good.example>",
		"Authentication-Results: other.example; dkim=pass header.d=good.example\r\n"+forged("middle")+
			"X-Authentication-Results: "+strings.ToUpper(authservID)+"; dkim=pass\r\n"+
			"Authentication-Results: (comment; with a semicolon)\r\n "+authservID+";\r\n\tdkim=pass header.d=bank.example\r\n"+
			"X-Wehr-Quarantine: no, trust me\r\n"+forged("end"),
		"Hello.\r\n")
	data = forged("top") + forged("top 2") + data
	data = w.sign(t, data, "good.example", "sel")
	r := w.send(t, Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}, "bounce@good.example", data)
	if !r.OK() {
		t.Fatalf("not accepted: %v", r)
	}
	m, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.Data, "forged") || strings.Contains(m.Data, "trust me") || strings.Contains(m.Data, "X-Authentication-Results") {
		t.Fatalf("a forged header survived:\n%s", m.Data)
	}
	ar := header(m.Data, "Authentication-Results")
	if len(ours(ar)) != 1 || !strings.Contains(ours(ar)[0], "dmarc=pass") || !strings.Contains(ours(ar)[0], "header.from=good.example") {
		t.Fatalf("our A-R: %q", ar)
	}
	foreign := 0
	for _, v := range ar {
		if strings.HasPrefix(v, "other.example;") {
			foreign++
		}
	}
	if foreign != 1 {
		t.Errorf("the other.example header was touched: %q", ar)
	}
}

// With milter_default_action = tempfail, wehr being down costs a 4xx and
// a retry, never a 5xx or a lost message.
func TestWehrDown(t *testing.T) {
	w.wehr.Kill()
	restarted := false
	defer func() {
		if !restarted {
			if err := w.wehr.Start(); err != nil {
				t.Fatalf("restart: %v", err)
			}
		}
	}()
	data, marker := message(t, "News <news@good.example>", "", "While wehr is down.\r\n")
	data = w.sign(t, data, "good.example", "sel")
	client := Client{IP: "192.0.2.10", Name: "mail.good.example", Helo: "mail.good.example"}
	r := w.send(t, client, "bounce@good.example", data)
	if r.Code < 400 || r.Code >= 500 {
		t.Fatalf("with wehr down: %v, want a 4xx", r)
	}
	if err := w.wehr.Start(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	r = w.send(t, client, "bounce@good.example", data)
	if !r.OK() {
		t.Fatalf("after restart: %v", r)
	}
	if _, err := w.dovecot.WaitMessage("alice@example.test", "INBOX", marker, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// wehr doctor, run as an admin would against the live installation: the
// real postconf reads the real main.cf the harness wrote, the daemons and
// Redis answer, the keys are published in the test DNS.
func TestDoctor(t *testing.T) {
	etc := filepath.Join(w.postfix.Dir, "etc")
	cmd := exec.Command(w.wehr.Bin, "--config", w.wehr.Config, "--resolver", w.wehr.Resolver, "doctor", "--postfix-config", etc)
	raw, err := cmd.CombinedOutput()
	out := strings.Join(strings.Fields(string(raw)), " ")
	if err != nil {
		t.Fatalf("doctor: %v\n%s", err, raw)
	}
	t.Logf("wehr doctor:\n%s", raw)
	for _, want := range []string{
		"ok store Redis (single)",
		"ok milter",
		"ok policyd",
		"ok dkim example.test 2026a-rsa (active) is published",
		"ok dkim example.test 2026a-ed (active) is published",
		"ok postfix smtpd_milters names wehr",
		"ok postfix smtpd_recipient_restrictions asks the policy service",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, raw)
		}
	}
	// A wrong --postfix-config: postconf's own words, not just its exit status.
	raw, _ = exec.Command(w.wehr.Bin, "--config", w.wehr.Config, "--resolver", w.wehr.Resolver, "doctor", "--postfix-config", "/nonexistent").CombinedOutput()
	if !strings.Contains(string(raw), "open /nonexistent/main.cf: No such file or directory") {
		t.Errorf("doctor on a missing config directory:\n%s", raw)
	}
	// The bulk instance has no milter: doctor says so, and fails.
	cmd = exec.Command(w.wehr.Bin, "--config", w.wehr.Config, "--resolver", w.wehr.Resolver, "doctor", "--postfix-config", filepath.Join(w.bulk.Dir, "etc"))
	raw, err = cmd.CombinedOutput()
	if out = strings.Join(strings.Fields(string(raw)), " "); err == nil || !strings.Contains(out, "FAIL postfix smtpd_milters = does not name unix:") {
		t.Fatalf("doctor on the bulk instance: %v\n%s", err, raw)
	}
}
