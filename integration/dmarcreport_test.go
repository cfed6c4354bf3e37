package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/tlsrpt"
)

// reportsConfig is a config for the wehr dmarc commands: the world's
// store and keys, reports sent from dmarc-reports@example.test through
// relay.
func reportsConfig(t *testing.T, relay string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "wehr.yaml")
	cfg := fmt.Sprintf(`hostname: %s
log: {level: info}
dns: {timeout: 1s, attempts: 1}
dkim: {keys_dir: %s}
store:
  backend: redis
  path: %s/wehr.db
  redis: {mode: single, addrs: [%s]}
reports:
  from: dmarc-reports@example.test
  org_name: Example Hosting
  relay: %s
  rate: 100
  failed: %s/failed
`, authservID, filepath.Join(w.dir, "dkim"), dir, w.redis.Addr, relay, dir)
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// wehrCmd runs the wehr binary with the world's DNS.
func wehrCmd(t *testing.T, cfg string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(w.wehr.Bin, append([]string{"--config", cfg, "--resolver", w.dns.Addr()}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func redisStore(t *testing.T) store.Store {
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{w.redis.Addr}, Prefix: "wehr:", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func tomorrow() string {
	return time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Format(time.RFC3339)
}

// The whole loop: messages through the real Postfix leave rows; wehr
// dmarc report send sends the report through Postfix into a Dovecot
// Maildir (signed with our key, passing DMARC at our own milter); wehr
// dmarc ingest --maildir reads it back; the ingested report is what was
// recorded.
func TestDMARCReportLoop(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	w.keys["rep.example"] = key
	if err := w.dns.AddZone(`
rep.example.                          300 IN TXT "v=spf1 ip4:192.0.2.60 -all"
_dmarc.rep.example.                   300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.test"
rep.example._report._dmarc.example.test. 300 IN TXT "v=DMARC1;"
60.2.0.192.in-addr.arpa.              300 IN PTR mail.rep.example.
mail.rep.example.                     300 IN A   192.0.2.60
9.113.0.203.in-addr.arpa.             300 IN PTR mail.forger.example.
mail.forger.example.                  300 IN A   203.0.113.9
`); err != nil {
		t.Fatal(err)
	}
	w.dns.AddTXT("sel._domainkey.rep.example", "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der))

	good := Client{IP: "192.0.2.60", Name: "mail.rep.example", Helo: "mail.rep.example"}
	for i := 0; i < 2; i++ {
		data, _ := message(t, "News <news@rep.example>", "", "Newsletter.\r\n")
		if r := w.send(t, good, "bounce@rep.example", w.sign(t, data, "rep.example", "sel")); !r.OK() {
			t.Fatalf("signed message: %v", r)
		}
	}
	forger := Client{IP: "203.0.113.9", Name: "mail.forger.example", Helo: "mail.forger.example"}
	data, _ := message(t, "News <news@rep.example>", "", "Pay now.\r\n")
	if r := w.send(t, forger, "x@evil.example", data); r.Code != 550 {
		t.Fatalf("forgery: %v", r)
	}

	// The rows reach the store within a second or two.
	st := redisStore(t)
	ctx := context.Background()
	var rows []store.StoredRow
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		rows, err = store.NewReportRows(st).Rows(ctx, "rep.example", time.Now().Add(-2*time.Hour), time.Now().Add(2*time.Hour))
		n := int64(0)
		for _, r := range rows {
			n += r.Count
		}
		if err == nil && n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows: %d messages counted, %v", n, err)
		}
	}

	cfg := reportsConfig(t, w.smtpAddr())
	out, err := wehrCmd(t, cfg, "dmarc", "report", "send", "--domain", "rep.example", "--until", tomorrow())
	if err != nil || !strings.Contains(out, "sent 1") {
		t.Fatalf("send: %v\n%s", err, out)
	}
	day := time.Now().UTC().Truncate(24 * time.Hour)
	reportID := dmarcreport.ReportID("rep.example", day, "example.test")
	m, err := w.dovecot.WaitMessage("dmarc@example.test", "INBOX", "Message-ID: <"+reportID+">", 10*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, Tail(w.postfix.Maillog(), 15), Tail(w.dovecot.Log(), 5))
	}
	// RFC 9990: the report passes DMARC, aligned. Our MX took it from
	// loopback as outbound mail; a receiver's verdict is our engine's
	// on the delivered message.
	vout, err := wehrCmd(t, cfg, "--json", "check", "message", "--ip", "127.0.0.1", "--mail-from", "dmarc-reports@example.test", m.Path)
	var verdict struct {
		DMARC struct {
			Result       string `json:"result"`
			DKIMAligned  bool   `json:"dkim_aligned"`
			PolicyDomain string `json:"policy_domain"`
		} `json:"dmarc"`
	}
	if jerr := json.Unmarshal([]byte(vout[strings.Index(vout, "{"):]), &verdict); err != nil || jerr != nil ||
		verdict.DMARC.Result != "pass" || !verdict.DMARC.DKIMAligned || verdict.DMARC.PolicyDomain != "example.test" {
		t.Errorf("the report does not pass DMARC: %v %v\n%s", err, jerr, vout)
	}
	// Sent once: a second run sends nothing.
	if out, err := wehrCmd(t, cfg, "dmarc", "report", "send", "--domain", "rep.example", "--until", tomorrow()); err != nil || !strings.Contains(out, "sent 0") {
		t.Fatalf("second send: %v\n%s", err, out)
	}

	maildir := filepath.Join(w.dovecot.Dir, "mail", "dmarc@example.test", "Maildir")
	out, err = wehrCmd(t, cfg, "dmarc", "ingest", "--maildir", maildir)
	if err != nil || !strings.Contains(out, "1 stored, 0 duplicates, 0 unreadable") {
		t.Fatalf("ingest: %v\n%s", err, out)
	}
	out, err = wehrCmd(t, cfg, "--json", "dmarc", "reports", "show", reportID)
	if err != nil {
		t.Fatalf("show: %v\n%s", err, out)
	}
	var rep dmarcreport.Report
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); err != nil {
		t.Fatal(err)
	}
	// What was ingested is what was recorded, row by row.
	f, err := dmarcreport.Build(dmarcreport.Meta{Submitter: authservID}, "rep.example", day, day.Add(24*time.Hour), rows)
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, r := range f.Records {
		want = append(want, fmt.Sprintf("%s %d %s dkim=%s spf=%s from=%s", r.Row.SourceIP, r.Row.Count, r.Row.PolicyEvaluated.Disposition,
			r.Row.PolicyEvaluated.DKIM, r.Row.PolicyEvaluated.SPF, r.Identifiers.HeaderFrom))
	}
	for _, r := range rep.Records {
		got = append(got, fmt.Sprintf("%s %d %s dkim=%s spf=%s from=%s", r.Row.SourceIP, r.Row.Count, r.Row.PolicyEvaluated.Disposition,
			r.Row.PolicyEvaluated.DKIM, r.Row.PolicyEvaluated.SPF, r.Identifiers.HeaderFrom))
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(got) != 2 || rep.MessageCount != 3 || rep.OrgName != "Example Hosting" {
		t.Errorf("ingested:\n%s\nrecorded:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(strings.Join(got, "\n"), "203.0.113.9 1 reject dkim=fail spf=fail") {
		t.Errorf("the forgery's row is missing: %v", got)
	}
	// The summary names the failing source first; reports list shows
	// the one we sent beside the one we received.
	out, _ = wehrCmd(t, cfg, "dmarc", "reports", "summary", "--domain", "rep.example")
	if i, j := strings.Index(out, "203.0.113.9"), strings.Index(out, "192.0.2.60"); i < 0 || j < 0 || i > j || !strings.Contains(out, "mail.rep.example") {
		t.Errorf("summary:\n%s", out)
	}
	out, _ = wehrCmd(t, cfg, "dmarc", "reports", "list", "--domain", "rep.example")
	if !strings.Contains(out, "received about rep.example: 1") || !strings.Contains(out, "sent about rep.example: 1") || !strings.Contains(out, "dmarc@example.test") {
		t.Errorf("list:\n%s", out)
	}
}

// crashProxy stands between the sender and Postfix and kills the
// sender at one point of the SMTP dialogue: on connect (after the
// report was built, before anything was sent), or when Postfix's 250
// to the message arrives (accepted, not yet marked).
type crashProxy struct {
	ln   net.Listener
	mu   sync.Mutex
	kill func()
}

func newCrashProxy(t *testing.T, upstream string, afterAccept bool) *crashProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &crashProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, upstream, afterAccept)
		}
	}()
	return p
}

func (p *crashProxy) doKill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kill != nil {
		p.kill()
	}
}

func (p *crashProxy) serve(c net.Conn, upstream string, afterAccept bool) {
	defer c.Close()
	if !afterAccept {
		p.doKill()
		return
	}
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	defer up.Close()
	var mu sync.Mutex
	dataEnd := false
	go func() {
		// Client to Postfix, watching for the end of the message.
		var tail []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				tail = append(tail, buf[:n]...)
				if bytes.Contains(tail, []byte("\r\n.\r\n")) {
					mu.Lock()
					dataEnd = true
					mu.Unlock()
				}
				if len(tail) > 8 {
					tail = tail[len(tail)-8:]
				}
				up.Write(buf[:n])
			}
			if err != nil {
				up.Close()
				return
			}
		}
	}()
	br := bufio.NewReader(up)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		mu.Lock()
		end := dataEnd
		mu.Unlock()
		if end && strings.HasPrefix(line, "250") {
			// Postfix took the message; the sender never hears of it.
			p.doKill()
			return
		}
		io.WriteString(c, line)
	}
}

// Crash tests: the sender killed after building a report and before
// sending it, and after Postfix accepted it but before marking it sent.
// Run again, the mailbox holds one copy, or two with the same report
// id: never none.
func TestDMARCReportSendCrash(t *testing.T) {
	ctx := context.Background()
	st := redisStore(t)
	yesterday := time.Now().UTC().Truncate(24 * time.Hour).Add(-24 * time.Hour)
	until := yesterday.Add(24 * time.Hour).Format(time.RFC3339)
	for _, d := range []string{"crash-a.example", "crash-b.example"} {
		w.dns.AddTXT(d+"._report._dmarc.example.test", "v=DMARC1;")
		row := dmarcreport.Row{Policy: dmarcreport.Published{Domain: d, P: "reject", ADKIM: "r", ASPF: "r", Discovery: "treewalk", Testing: "n"},
			SourceIP: "203.0.113.9", HeaderFrom: d, Disposition: "reject", DKIM: "fail", SPF: "fail",
			SPFResult: dmarcreport.SPFAuth{Domain: "evil.example", Scope: "mfrom", Result: "fail"}, RUA: []string{"mailto:dmarc@example.test"}}
		def, _ := json.Marshal(row)
		if err := store.NewReportRows(st).Add(ctx, d, yesterday.Add(10*time.Hour), row.Key(), def, 7); err != nil {
			t.Fatal(err)
		}
	}
	if rows, err := store.NewReportRows(st).Rows(ctx, "crash-a.example", yesterday, yesterday.Add(24*time.Hour)); len(rows) != 1 {
		t.Fatalf("rows %v %v", rows, err)
	}
	copies := func(domain string) []Message {
		return w.dovecot.Find("dmarc@example.test", "Message-ID: <"+dmarcreport.ReportID(domain, yesterday, "example.test")+">")
	}
	direct := reportsConfig(t, w.smtpAddr())
	for _, tc := range []struct {
		domain      string
		afterAccept bool
		want        int
	}{
		{"crash-a.example", false, 1}, // killed before sending: sent once, on the second run
		{"crash-b.example", true, 2},  // killed after the relay took it: sent again, same id
	} {
		proxy := newCrashProxy(t, w.smtpAddr(), tc.afterAccept)
		cfg := reportsConfig(t, proxy.ln.Addr().String())
		cmd := exec.Command(w.wehr.Bin, "--config", cfg, "--resolver", w.dns.Addr(), "dmarc", "report", "send", "--domain", tc.domain, "--until", until)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		proxy.mu.Lock()
		proxy.kill = func() { cmd.Process.Kill() }
		proxy.mu.Unlock()
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("%s: the sender was not killed: %v\n%s", tc.domain, err, out.String())
		}
		if tc.afterAccept {
			if _, err := w.dovecot.WaitMessage("dmarc@example.test", "INBOX", dmarcreport.ReportID(tc.domain, yesterday, "example.test"), 10*time.Second); err != nil {
				t.Fatalf("%s: the copy Postfix accepted: %v", tc.domain, err)
			}
		} else if n := len(copies(tc.domain)); n != 0 {
			t.Fatalf("%s: %d copies before sending", tc.domain, n)
		}
		// Run again: the report has no mark, so it goes (again).
		if out, err := wehrCmd(t, direct, "dmarc", "report", "send", "--domain", tc.domain, "--until", until); err != nil || !strings.Contains(out, "sent 1") {
			t.Fatalf("%s: rerun: %v\n%s", tc.domain, err, out)
		}
		var got []Message
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = copies(tc.domain); len(got) >= tc.want {
				break
			}
		}
		time.Sleep(300 * time.Millisecond) // nothing more arrives
		if got = copies(tc.domain); len(got) != tc.want {
			t.Fatalf("%s: %d copies, want %d", tc.domain, len(got), tc.want)
		}
		for _, m := range got {
			if subj := strings.Join(strings.Fields(strings.Join(header(m.Data, "Subject"), " ")), " "); !strings.Contains(subj, "Report-ID: <"+dmarcreport.ReportID(tc.domain, yesterday, "example.test")+">") {
				t.Errorf("%s: subject %q", tc.domain, subj)
			}
		}
		// And a third run sends nothing.
		if out, _ := wehrCmd(t, direct, "dmarc", "report", "send", "--domain", tc.domain, "--until", until); !strings.Contains(out, "sent 0") {
			t.Errorf("%s: third run: %s", tc.domain, out)
		}
	}
}

// The README's pipe transport, through the real Postfix: a report
// mailed to reports@example.test is stored by wehr dmarc ingest running
// as an unprivileged user; an unreadable one is kept in the failed
// folder and the message is not bounced; with the store down Postfix
// keeps the message queued (exit 75) and delivers it once it is back.
func TestDMARCIngestPipe(t *testing.T) {
	dir, err := os.MkdirTemp(w.dir, "pipe-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	failed := filepath.Join(dir, "failed")
	os.Mkdir(failed, 0o777)
	os.Chmod(failed, 0o777)
	cfg := filepath.Join(dir, "wehr.yaml")
	writeCfg := func(redisAddr string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf(`hostname: %s
log: {level: info}
store:
  backend: redis
  path: %s/wehr.db
  redis: {mode: single, addrs: [%s], timeout: 300ms}
reports: {failed: %s}
`, authservID, dir, redisAddr, failed)), 0o644)
	}
	writeCfg(w.redis.Addr)
	etc := filepath.Join(w.postfix.Dir, "etc")
	postconf := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("postconf", append([]string{"-c", etc}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("postconf %v: %v %s", args, err, out)
		}
	}
	reload := func() {
		t.Helper()
		if out, err := w.postfix.command("reload"); err != nil {
			t.Fatalf("postfix reload: %v %s", err, out)
		}
	}
	// The README's lines, with this test's binary and config.
	postconf("-M", "dmarcreports/unix=dmarcreports unix - n n - 2 pipe flags=q user=nobody argv="+w.wehr.Bin+" --config "+cfg+" dmarc ingest")
	postconf("-M", "tlsreports/unix=tlsreports unix - n n - 2 pipe flags=q user=nobody argv="+w.wehr.Bin+" --config "+cfg+" tlsrpt ingest")
	postconf("-e", "transport_maps = inline:{ reports@example.test=dmarcreports:, tls-reports@example.test=tlsreports: }")
	reload()
	t.Cleanup(func() {
		postconf("-X", "transport_maps")
		postconf("-MX", "dmarcreports/unix")
		postconf("-MX", "tlsreports/unix")
		reload()
	})
	st := redisStore(t)
	ctx := context.Background()
	mailReport := func(subject string, body []byte) Reply {
		t.Helper()
		msg := "From: noreply-dmarc@reporter.example\r\nTo: reports@example.test\r\nSubject: " + subject + "\r\n" +
			"Message-ID: <" + subject + "@reporter.example>\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: application/gzip; name=\"r.xml.gz\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString(body) + "\r\n"
		r, err := Send(w.smtpAddr(), Client{Helo: "mail.reporter.example"}, "noreply-dmarc@reporter.example", []string{"reports@example.test"}, msg)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	stored := func(reportID string) bool {
		reps, _ := dmarcreport.Reports(ctx, st, "pipe.example", time.Time{})
		for _, r := range reps {
			if r.Report.ReportID == reportID {
				return true
			}
		}
		return false
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not after 15s\n%s", what, Tail(w.postfix.Maillog(), 10))
			}
		}
	}
	xmlReport := func(id string) []byte {
		return []byte(`<?xml version="1.0"?><feedback><report_metadata><org_name>Reporter</org_name><email>r@reporter.example</email><report_id>` + id +
			`</report_id><date_range><begin>1764460800</begin><end>1764547199</end></date_range></report_metadata><policy_published><domain>pipe.example</domain><p>reject</p></policy_published>` +
			`<record><row><source_ip>192.0.2.1</source_ip><count>4</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>pipe.example</header_from></identifiers><auth_results><spf><domain>pipe.example</domain><result>pass</result></spf></auth_results></record></feedback>`)
	}
	gzipped := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}

	if r := mailReport("pipe-1", gzipped(xmlReport("pipe-1"))); !r.OK() {
		t.Fatalf("report: %v", r)
	}
	waitFor("report pipe-1 stored", func() bool { return stored("pipe-1") })
	waitFor("delivered to the pipe", func() bool {
		return w.postfix.LogContains("to=<reports@example.test>", "relay=dmarcreports", "status=sent")
	})

	// A TLS report (RFC 8460 5.3: multipart/report, the report as
	// application/tlsrpt+gzip) through the TLS report pipe.
	example, err := os.ReadFile("../tlsrpt/testdata/rfc8460.json")
	if err != nil {
		t.Fatal(err)
	}
	tlsReport := strings.NewReplacer("company-y.example", "pipe.example", "5065427c-23d3-47ca-b6e0-946ea0e8c4be", "tls-pipe-1").Replace(string(example))
	tlsMsg := "From: tls-reports@reporter.example\r\nTo: tls-reports@example.test\r\nSubject: Report Domain: pipe.example Submitter: reporter.example Report-ID: <tls-pipe-1>\r\n" +
		"TLS-Report-Domain: pipe.example\r\nTLS-Report-Submitter: reporter.example\r\nMessage-ID: <tls-pipe-1@reporter.example>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nA TLS report.\r\n--B\r\n" +
		"Content-Type: application/tlsrpt+gzip\r\nContent-Disposition: attachment; filename=\"reporter.example!pipe.example!1459468800!1459555199.json.gz\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(gzipped([]byte(tlsReport))) + "\r\n--B--\r\n"
	if r, err := Send(w.smtpAddr(), Client{Helo: "mail.reporter.example"}, "tls-reports@reporter.example", []string{"tls-reports@example.test"}, tlsMsg); err != nil || !r.OK() {
		t.Fatalf("TLS report: %v %v", r, err)
	}
	waitFor("TLS report tls-pipe-1 stored", func() bool {
		sum, _ := tlsrpt.Summarize(ctx, st, "pipe.example", time.Time{})
		return sum.Reports == 1 && sum.Failed == 303
	})

	// Unreadable: kept aside with the reason, delivered (status=sent),
	// no bounce to the reporter.
	if r := mailReport("pipe-bad", []byte("\x1f\x8bnot really gzip")); !r.OK() {
		t.Fatalf("bad report: %v", r)
	}
	waitFor("the unreadable report kept", func() bool {
		files, _ := filepath.Glob(filepath.Join(failed, "*.reason"))
		return len(files) == 1
	})
	if w.postfix.LogContains("noreply-dmarc@reporter.example", "status=bounced") {
		t.Error("an unreadable report was bounced to its sender")
	}

	// The store down: Postfix defers (exit 75) and keeps the message.
	writeCfg("127.0.0.1:1")
	if r := mailReport("pipe-2", gzipped(xmlReport("pipe-2"))); !r.OK() {
		t.Fatalf("report: %v", r)
	}
	waitFor("deferred", func() bool {
		return w.postfix.LogContains("to=<reports@example.test>", "relay=dmarcreports", "status=deferred")
	})
	writeCfg(w.redis.Addr)
	if out, err := w.postfix.command("flush"); err != nil {
		t.Fatalf("postfix flush: %v %s", err, out)
	}
	waitFor("report pipe-2 stored after the store came back", func() bool { return stored("pipe-2") })
}
