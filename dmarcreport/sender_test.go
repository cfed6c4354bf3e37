package dmarcreport

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/store"
)

// relay is a minimal SMTP server that keeps what it accepts; reply is
// its answer to the end of DATA.
type relay struct {
	ln    net.Listener
	mu    sync.Mutex
	reply string
	msgs  []relayed
}

type relayed struct {
	from, to string
	data     []byte
	at       time.Time
}

func newRelay(t *testing.T) *relay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, reply: "250 2.0.0 queued"}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *relay) setReply(s string) { r.mu.Lock(); r.reply = s; r.mu.Unlock() }

func (r *relay) got() []relayed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayed(nil), r.msgs...)
}

func (r *relay) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "220 relay.test ESMTP\r\n")
	var m relayed
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			fmt.Fprintf(c, "250-relay.test\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			m = relayed{from: addrOf(line[10:])}
			fmt.Fprintf(c, "250 ok\r\n")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			m.to = addrOf(line[8:])
			fmt.Fprintf(c, "250 ok\r\n")
		case cmd == "DATA":
			fmt.Fprintf(c, "354 go\r\n")
			var data bytes.Buffer
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			m.data, m.at = data.Bytes(), time.Now()
			r.mu.Lock()
			reply := r.reply
			if strings.HasPrefix(reply, "250") {
				r.msgs = append(r.msgs, m)
			}
			r.mu.Unlock()
			fmt.Fprintf(c, "%s\r\n", reply)
		case cmd == "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		default:
			fmt.Fprintf(c, "250 ok\r\n")
		}
	}
}

func addrOf(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '>'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimPrefix(s, "<")
}

// attachment returns the report a relayed message carries, and checks
// the message's RFC 9990 form on the way.
func attachment(t *testing.T, data []byte) (*mail.Message, string, []byte) {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no report attachment: %v", err)
		}
		if p.Header.Get("Content-Type") != "" && strings.HasPrefix(p.Header.Get("Content-Type"), "application/gzip") {
			b, _ := io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			x, _ := io.ReadAll(zr)
			return msg, p.FileName(), x
		}
	}
}

type senderFixture struct {
	st    store.Store
	relay *relay
	s     *Sender
	logs  *bytes.Buffer
	day   time.Time
}

func newSenderFixture(t *testing.T) *senderFixture {
	ctx := context.Background()
	st := open(t)
	srv := dnstest.New(t, `
bank.example._report._dmarc.reports.example.  300 IN TXT "v=DMARC1;"
`)
	res, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	rl := newRelay(t)
	day := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	rec := NewRecorder(st, 100, nil, nil)
	rec.now = func() time.Time { return day.Add(3 * time.Hour) }
	rua := []string{"mailto:d@bank.example", "mailto:agg@reports.example", "mailto:victim@victim.example"}
	rec.Record(verdict(mailauth.DMARCFail, "reject", "reject", rua), env)
	rec.Record(verdict(mailauth.DMARCPass, "reject", "none", rua), env)
	if err := rec.writeAll(ctx, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	cfg.From, cfg.OrgName, cfg.Rate = "dmarc-reports@mx1.example.net", "Example Hosting", 1000
	cfg.Relay = rl.ln.Addr().String()
	var logs bytes.Buffer
	s := &Sender{Config: cfg, Store: st, DNS: res, Hostname: "mx1.example.net",
		Log: slog.New(slog.NewTextHandler(&logs, nil))}
	return &senderFixture{st: st, relay: rl, s: s, logs: &logs, day: day}
}

// A finished day becomes one report per verified destination, in the
// RFC 9990 form; a second run sends nothing again.
func TestSend(t *testing.T) {
	ctx := context.Background()
	fx := newSenderFixture(t)
	out, err := fx.s.Run(ctx, fx.day.Add(25*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if out.Reports != 1 || out.Sent != 2 || out.Skipped != 1 {
		t.Fatalf("outcome %+v\n%s", out, fx.logs)
	}
	got := fx.relay.got()
	if len(got) != 2 || got[0].to != "d@bank.example" || got[1].to != "agg@reports.example" || got[0].from != "dmarc-reports@mx1.example.net" {
		t.Fatalf("relayed %d: %s", len(got), fx.logs)
	}
	msg, name, x := attachment(t, got[0].data)
	wantID := "1795996800.bank.example@mx1.example.net"
	subject := strings.Join(strings.Fields(msg.Header.Get("Subject")), " ")
	if subject != "Report Domain: bank.example Submitter: mx1.example.net Report-ID: <"+wantID+">" {
		t.Errorf("subject %q", subject)
	}
	if msg.Header.Get("Message-ID") != "<"+wantID+">" || msg.Header.Get("Auto-Submitted") != "auto-generated" {
		t.Errorf("header %v", msg.Header)
	}
	if name != "mx1.example.net!bank.example!1795996800!1796083199.xml.gz" {
		t.Errorf("file name %s", name)
	}
	if !bytes.Contains(x, []byte("<report_id>"+wantID+"</report_id>")) || !bytes.Contains(x, []byte("<count>1</count>")) {
		t.Errorf("report %s", x)
	}
	validate(t, x)
	// The victim's address, not authorised, got nothing and the log says why.
	if !strings.Contains(fx.logs.String(), "victim@victim.example") || !strings.Contains(fx.logs.String(), "not authorised") {
		t.Errorf("log %s", fx.logs)
	}
	marks, err := store.NewReportMarks(fx.st).List(ctx, "bank.example")
	if err != nil || len(marks) != 2 || marks[0].Status != "sent" || marks[0].ReportID != wantID {
		t.Fatalf("marks %+v %v", marks, err)
	}
	out, err = fx.s.Run(ctx, fx.day.Add(26*time.Hour))
	if err != nil || out.Sent != 0 || len(fx.relay.got()) != 2 {
		t.Fatalf("second run %+v %v: sent again", out, err)
	}
	// The period that has not ended is not sent.
	if out, _ := fx.s.Run(ctx, fx.day.Add(23*time.Hour)); out.Reports != 0 {
		t.Errorf("unfinished period reported: %+v", out)
	}
}

// A relay that answers 4xx leaves the report for the next run; a 5xx
// marks it refused, not sent again.
func TestSendRelayAnswers(t *testing.T) {
	ctx := context.Background()
	fx := newSenderFixture(t)
	until := fx.day.Add(25 * time.Hour)
	fx.relay.setReply("451 4.3.0 try later")
	out, err := fx.s.Run(ctx, until)
	if err != nil || out.Deferred != 2 || out.Sent != 0 {
		t.Fatalf("%+v %v", out, err)
	}
	if m, _ := store.NewReportMarks(fx.st).List(ctx, ""); len(m) != 0 {
		t.Fatalf("marked without acceptance: %+v", m)
	}
	fx.relay.setReply("550 5.7.1 no")
	out, _ = fx.s.Run(ctx, until)
	if out.Refused != 2 {
		t.Fatalf("%+v", out)
	}
	fx.relay.setReply("250 ok")
	if out, _ = fx.s.Run(ctx, until); out.Sent != 0 {
		t.Fatalf("a refused report sent again: %+v", out)
	}
	// The relay down: deferred, not lost.
	fx2 := newSenderFixture(t)
	fx2.relay.ln.Close()
	if out, err := fx2.s.Run(ctx, until); err != nil || out.Deferred != 2 {
		t.Fatalf("relay down: %+v %v", out, err)
	}
}

// Suppressed addresses (config or store), destinations' size limits and
// another node's lock.
func TestSendSkips(t *testing.T) {
	ctx := context.Background()
	fx := newSenderFixture(t)
	until := fx.day.Add(25 * time.Hour)
	fx.s.Config.Suppress = []string{"D@Bank.Example"}
	if err := store.NewSuppressions(fx.st).Add(ctx, store.Suppression{Address: "agg@reports.example", Reason: "bounces"}); err != nil {
		t.Fatal(err)
	}
	out, err := fx.s.Run(ctx, until)
	if err != nil || out.Sent != 0 || out.Skipped != 3 || len(fx.relay.got()) != 0 {
		t.Fatalf("%+v %v", out, err)
	}
	m, _ := store.NewReportMarks(fx.st).List(ctx, "")
	if len(m) != 2 || m[0].Status != "suppressed" {
		t.Fatalf("marks %+v", m)
	}

	fx = newSenderFixture(t)
	if _, ok, err := fx.st.Lock(ctx, SendLock, "mx2.example.net", time.Now(), time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := fx.s.Run(ctx, until); !errors.Is(err, ErrBusy) {
		t.Fatalf("ran beside another node: %v", err)
	}
	// Our own host's lock, left by a process that crashed, is ours.
	fx = newSenderFixture(t)
	if _, ok, err := fx.st.Lock(ctx, SendLock, "mx1.example.net", time.Now(), time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if out, err := fx.s.Run(ctx, until); err != nil || out.Sent != 2 {
		t.Fatalf("after a crash on this host: %+v %v", out, err)
	}
	// Another process of this host, holding the local lock, keeps us out.
	fx = newSenderFixture(t)
	fx.s.LocalLock = filepath.Join(t.TempDir(), "send.lock")
	unlock, err := flock(fx.s.LocalLock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fx.s.Run(ctx, until); !errors.Is(err, ErrBusy) {
		t.Fatalf("ran beside another process: %v", err)
	}
	unlock()
	if out, err := fx.s.Run(ctx, until); err != nil || out.Sent != 2 {
		t.Fatalf("after the other process: %+v %v", out, err)
	}
}

// The hostile variant: a policy whose rua asks for a tiny size gets
// nothing rather than a broken report, and a dry run writes files and
// marks nothing.
func TestSendSizeAndDryRun(t *testing.T) {
	ctx := context.Background()
	fx := newSenderFixture(t)
	dir := t.TempDir()
	fx.s.DryRun = dir
	out, err := fx.s.Run(ctx, fx.day.Add(25*time.Hour))
	if err != nil || out.Reports != 1 {
		t.Fatalf("%+v %v", out, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 3 { // the report and two messages
		t.Fatalf("dry run wrote %v", files)
	}
	if m, _ := store.NewReportMarks(fx.st).List(ctx, ""); len(m) != 0 || len(fx.relay.got()) != 0 {
		t.Fatal("the dry run sent or marked")
	}
	b, _ := os.ReadFile(files[0])
	if _, _, x := attachment(t, b); !bytes.Contains(x, []byte("bank.example")) {
		t.Fatal("dry-run message without its report")
	}
}

// Sending is paced: reports.rate messages a second at most.
func TestSendPacing(t *testing.T) {
	fx := newSenderFixture(t)
	fx.s.Config.Rate = 5 // one every 200 ms
	if out, err := fx.s.Run(context.Background(), fx.day.Add(25*time.Hour)); err != nil || out.Sent != 2 {
		t.Fatalf("%+v %v", out, err)
	}
	got := fx.relay.got()
	if gap := got[1].at.Sub(got[0].at); gap < 190*time.Millisecond {
		t.Errorf("two reports %v apart at 5 a second", gap)
	}
}

func TestPeriods(t *testing.T) {
	now := time.Date(2026, 12, 1, 5, 30, 0, 0, time.UTC)
	p := Periods(now, 24*time.Hour)
	if len(p) != 3 || !p[2][1].Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || !p[0][0].Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("daily: %v", p)
	}
	p = Periods(now, 6*time.Hour)
	if !p[len(p)-1][1].Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) || len(p) != 12 {
		t.Errorf("6h: %d %v", len(p), p[len(p)-1])
	}
}

// The From of a report: a name that could break the field is cleaned, a
// non-ASCII one encoded.
func TestHeaderAddress(t *testing.T) {
	for in, want := range map[string]string{
		"Example Hosting":    `"Example Hosting" <r@x.example>`,
		"Evil\"\r\nBcc: v@x": `"EvilBcc: v@x" <r@x.example>`,
		"Überwachung GmbH":   "=?utf-8?q?=C3=9Cberwachung_GmbH?= <r@x.example>",
		"":                   "<r@x.example>",
	} {
		if got := headerAddress(in, "r@x.example"); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}
