package authpolicy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/store"
)

type fixture struct {
	srv  *httptest.Server
	st   store.Store
	logs *bytes.Buffer
	now  time.Time
	p    *Policy
}

func newFixture(t *testing.T, mod func(*Config)) *fixture {
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return newFixtureStore(t, st, mod)
}

func newFixtureStore(t *testing.T, st store.Store, mod func(*Config)) *fixture {
	cfg := Default()
	cfg.LoginHashKey = "k"
	if mod != nil {
		mod(&cfg)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := &fixture{st: st, logs: &logs, now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	f.p = New(cfg, st, log)
	f.p.now = func() time.Time { return f.now }
	f.srv = httptest.NewServer(NewServer(f.p, log, nil))
	t.Cleanup(f.srv.Close)
	return f
}

// post sends what Dovecot sends and returns the HTTP status and body.
func (f *fixture) post(t *testing.T, command, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+"/?command="+command, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dovecot/auth-policy-client")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func body(login, remote string) string {
	return fmt.Sprintf(`{"device_id":"","login":%q,"protocol":"imap","pwhash":"06a8","remote":%q,"session_id":"6OjnRjVhJuZ/AAAB","tls":false}`, login, remote)
}

func report(login, remote string, ok bool) string {
	return strings.TrimSuffix(body(login, remote), "}") + fmt.Sprintf(`,"success":%v,"policy_reject":false}`, ok)
}

// allow asks before a login and returns Dovecot's view: the status.
func (f *fixture) allow(t *testing.T, login, remote string) (int, string) {
	t.Helper()
	code, b := f.post(t, "allow", body(login, remote))
	if code != 200 {
		t.Fatalf("allow: HTTP %d %s", code, b)
	}
	var d struct {
		Status int    `json:"status"`
		Msg    string `json:"msg"`
	}
	if err := json.Unmarshal([]byte(b), &d); err != nil {
		t.Fatalf("allow: %q: %v", b, err)
	}
	return d.Status, d.Msg
}

func (f *fixture) fail(t *testing.T, login, remote string) {
	t.Helper()
	if code, b := f.post(t, "report", report(login, remote, false)); code != 200 || b != `{"status":0}` {
		t.Fatalf("report: %d %s", code, b)
	}
}

// Failures from one address: delays grow a second per failure past
// delay_after, then the address is refused with a message a user can
// act on; the block lasts block_for.
func TestAddressGuessing(t *testing.T) {
	f := newFixture(t, nil)
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s != 0 {
		t.Fatalf("a clean address: %d", s)
	}
	var got []int
	for i := 0; i < 15; i++ {
		f.fail(t, "alice@example.test", "192.0.2.7")
		s, _ := f.allow(t, "alice@example.test", "192.0.2.7")
		got = append(got, s)
	}
	want := "[0 0 1 2 3 4 5 6 7 8 9 10 10 10 -1]"
	if fmt.Sprint(got) != want {
		t.Fatalf("statuses %v, want %s", got, want)
	}
	_, msg := f.allow(t, "alice@example.test", "192.0.2.7")
	if msg != "Too many failed logins from your address; try again in 15 minutes" {
		t.Errorf("message %q", msg)
	}
	if !strings.Contains(f.logs.String(), `msg="authpolicy: refused" command=allow remote=192.0.2.7 login=alice@example.test protocol=imap`) {
		t.Errorf("log:\n%s", f.logs)
	}
	// Another address is not touched; the IPv4-mapped form is the same
	// address.
	if s, _ := f.allow(t, "alice@example.test", "192.0.3.7"); s != 0 {
		t.Errorf("another address: %d", s)
	}
	if s, _ := f.allow(t, "bob@example.test", "::ffff:192.0.2.7"); s != -1 {
		t.Errorf("mapped address: %d", s)
	}
	// Past block_for the block is gone (the failures still delay a
	// while: the window slides); past two windows nothing is left.
	f.now = f.now.Add(16 * time.Minute)
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s < 0 {
		t.Errorf("after block_for: %d", s)
	}
	f.now = f.now.Add(15 * time.Minute)
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s != 0 {
		t.Errorf("after two windows: %d", s)
	}
}

// A user who mistyped, then got it right, is not a guesser: the
// success takes that address's failures for the name back.
func TestSuccessForgives(t *testing.T) {
	f := newFixture(t, nil)
	for i := 0; i < 6; i++ {
		f.fail(t, "alice@example.test", "192.0.2.7")
	}
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s != 4 {
		t.Fatalf("after 6 failures: %d", s)
	}
	f.post(t, "report", report("alice@example.test", "192.0.2.7", true))
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s != 0 {
		t.Errorf("after the success: %d", s)
	}
	// Our own refusal reported back is not counted as a failure.
	f.post(t, "report", strings.Replace(report("alice@example.test", "192.0.2.7", false), `"policy_reject":false`, `"policy_reject":true`, 1))
	if c, _ := store.NewAuthFailures(f.st).Counts(t.Context(), netip.MustParseAddr("192.0.2.7"), "", f.now, time.Hour); c.IP > 0 {
		t.Errorf("our refusal counted: %+v", c)
	}
}

// Password spraying: many login names failing from one address.
func TestSpraying(t *testing.T) {
	f := newFixture(t, nil)
	for i := 0; i < 6; i++ {
		f.fail(t, fmt.Sprintf("user%d@example.test", i), "198.51.100.9")
	}
	s, msg := f.allow(t, "user9@example.test", "198.51.100.9")
	if s != -1 || !strings.Contains(f.logs.String(), "password spraying") || !strings.Contains(msg, "your address") {
		t.Fatalf("spraying: %d %q", s, msg)
	}
}

// Distributed guessing: one login name failing from many networks is
// blocked from new places, and its owner still gets in from a network
// they logged in from before.
func TestDistributedGuessing(t *testing.T) {
	f := newFixture(t, nil)
	f.post(t, "report", report("Alice@Example.test", "203.0.113.20", true)) // the user's usual network
	for i := 0; i < 30; i++ {
		f.fail(t, "alice@example.test", fmt.Sprintf("10.%d.0.1", i))
	}
	s, msg := f.allow(t, "alice@example.test", "10.99.0.1")
	if s != -1 || !strings.Contains(msg, "from a network you used before") {
		t.Fatalf("a new place: %d %q", s, msg)
	}
	if s, _ := f.allow(t, "ALICE@example.test", "203.0.113.77"); s != 0 {
		t.Errorf("the user's usual network: %d", s)
	}
	if s, _ := f.allow(t, "bob@example.test", "10.99.0.1"); s != 0 {
		t.Errorf("another user from the same new place: %d", s)
	}
}

// Networks in allow_networks are never throttled.
func TestAllowNetworks(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowNetworks = setting.Networks("192.0.2.0/24") })
	for i := 0; i < 20; i++ {
		f.fail(t, "alice@example.test", "192.0.2.7")
	}
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s != 0 {
		t.Errorf("allowlisted: %d", s)
	}
}

// The store down: logins are allowed (as Dovecot does without us),
// logged and counted.
func TestStoreDown(t *testing.T) {
	f := newFixtureStore(t, store.Down{Err: fmt.Errorf("redis: %w", store.ErrUnavailable)}, nil)
	if s, _ := f.allow(t, "alice@example.test", "192.0.2.7"); s != 0 {
		t.Errorf("store down: %d", s)
	}
	if code, _ := f.post(t, "report", report("alice@example.test", "192.0.2.7", false)); code != 200 {
		t.Errorf("report with the store down: %d", code)
	}
	if !strings.Contains(f.logs.String(), "the store does not answer; allowing") {
		t.Errorf("log:\n%s", f.logs)
	}
}

// What is not Dovecot's request gets a clear HTTP error, and the
// service goes on.
func TestProtocolErrors(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.APIKey = "s3cret" })
	key := []string{"X-API-Key", "s3cret"}
	for name, tc := range map[string]struct {
		command, body string
		hdr           []string
		code          int
		text          string
	}{
		"no key":         {"allow", body("a@b.example", "192.0.2.1"), nil, 401, "API key"},
		"wrong key":      {"allow", body("a@b.example", "192.0.2.1"), []string{"X-API-Key", "nope"}, 401, "API key"},
		"unknown":        {"deny", body("a@b.example", "192.0.2.1"), key, 400, `command "deny"`},
		"garbage":        {"allow", "\x00\x01garbage", key, 400, "not a JSON object"},
		"array":          {"allow", "[1,2]", key, 400, "not a JSON object"},
		"no remote":      {"allow", `{"login":"a@b.example"}`, key, 400, "no remote"},
		"oversized":      {"allow", `{"login":"` + strings.Repeat("a", 20000) + `"}`, key, 413, "body over"},
		"authorization":  {"allow", body("a@b.example", "192.0.2.1"), []string{"Authorization", "s3cret"}, 200, `"status":0`},
		"bad remote":     {"allow", body("a@b.example", "not-an-ip"), key, 200, `"status":0`},
		"report garbage": {"report", `{"remote":"192.0.2.1","success":"yes"}`, key, 400, "not a JSON object"},
	} {
		code, b := f.post(t, tc.command, tc.body, tc.hdr...)
		if code != tc.code || !strings.Contains(b, tc.text) {
			t.Errorf("%s: %d %q, want %d with %q", name, code, b, tc.code, tc.text)
		}
	}
	resp, err := http.Get(f.srv.URL + "/?command=allow")
	if err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v", resp.StatusCode, err)
	}
	if s, _ := f.allow2(t, key); s != 0 {
		t.Error("the service stopped answering")
	}
}

func (f *fixture) allow2(t *testing.T, hdr []string) (int, string) {
	code, b := f.post(t, "allow", body("a@b.example", "192.0.2.1"), hdr...)
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	return 0, b
}

// Served over TLS when tls_cert and tls_key are set; a client that
// sends half a request and waits ties up nothing the others need.
func TestServeTLSAndSlowClients(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &pk.PublicKey, pk)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(pk)
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	st, err := store.OpenEmbedded(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := NewServer(New(Default(), st, log), log, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, cert, key) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	// Slow clients: connected, half a request line, then nothing.
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("\x16\x03\x01"))
	}
	pool := x509.NewCertPool()
	certPEM, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(certPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post("https://"+ln.Addr().String()+"/?command=allow", "application/json", strings.NewReader(body("a@b.example", "192.0.2.1")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"status":0`) {
		t.Fatalf("over TLS: %d %s", resp.StatusCode, b)
	}
	// Plain HTTP to the TLS port is refused, not answered.
	if resp, err := http.Post("http://"+ln.Addr().String()+"/?command=allow", "application/json", strings.NewReader(body("a@b.example", "192.0.2.1"))); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered on the TLS port")
		}
		resp.Body.Close()
	}
}
