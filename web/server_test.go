package web

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/store/storetest"
	"github.com/wehr/wehr/tlsrpt"
)

// fixture is a report from org about domain for the day that starts at
// day: records from 192.0.2.1 (DKIM and SPF pass, 10 messages) and
// 198.51.100.7 (both fail, fail messages).
func fixture(org, id, domain string, day time.Time, fail int) string {
	return fmt.Sprintf(`<?xml version="1.0"?><feedback><report_metadata><org_name>%s</org_name><email>r@%s</email><report_id>%s</report_id>`+
		`<date_range><begin>%d</begin><end>%d</end></date_range></report_metadata><policy_published><domain>%s</domain><p>reject</p></policy_published>`+
		`<record><row><source_ip>192.0.2.1</source_ip><count>10</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>%[6]s</header_from></identifiers><auth_results><dkim><domain>%[6]s</domain><selector>s2026</selector><result>pass</result></dkim><spf><domain>%[6]s</domain><result>pass</result></spf></auth_results></record>`+
		`<record><row><source_ip>198.51.100.7</source_ip><count>%d</count><policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row><identifiers><header_from>%[6]s</header_from></identifiers><auth_results><dkim><domain>evil.example</domain><selector>forged</selector><result>pass</result></dkim><spf><domain>evil.example</domain><result>fail</result></spf></auth_results></record>`+
		`</feedback>`, org, strings.ToLower(org)+".example", id, day.Unix(), day.Add(24*time.Hour-time.Second).Unix(), domain, fail)
}

// checker stands in for the engine: what a domain publishes, and the
// selectors it was asked about.
type checker struct{}

func (checker) CheckDomain(_ context.Context, domain string, selectors []string) mailauth.DomainReport {
	r := mailauth.DomainReport{Domain: domain}
	r.SPF.Record = "v=spf1 ip4:192.0.2.1 -all"
	r.DMARC.Record = "v=DMARC1; p=reject"
	r.DMARC.PolicyDomain = domain
	for _, s := range selectors {
		r.DKIM = append(r.DKIM, mailauth.DKIMKeyReport{Selector: s, KeyType: "rsa", KeyBits: 2048})
	}
	r.Warnings = []string{"<script>alert(1)</script> from DNS"}
	return r
}

// txts is a resolver of fixed TXT answers; a name without one, and
// every address's PTR, does not exist.
type txts map[string][]string

func (txts) LookupAddr(_ context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

func (x txts) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := x[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

type world struct {
	srv               *httptest.Server
	server            *Server
	st                store.Store
	admin, bank, none string
	otherID, bankID   string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	st, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	w := &world{st: st}
	day := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	for i, f := range []struct {
		org, domain string
		day         int
		fail        int
	}{
		{"Google", "bank.example", 0, 3}, {"Yahoo", "bank.example", 0, 0}, {"Google", "bank.example", 2, 5}, {"Google", "other.example", 1, 7},
	} {
		res, err := dmarcreport.Ingest(ctx, st, strings.NewReader(fixture(f.org, fmt.Sprint("r", i), f.domain, day.AddDate(0, 0, f.day), f.fail)), dmarcreport.Limits{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if f.domain == "other.example" {
			w.otherID = res.ID
		} else {
			w.bankID = res.ID
		}
	}
	// A TLS report about bank.example (RFC 8460's example, moved).
	tls, err := os.ReadFile("../tlsrpt/testdata/rfc8460.json")
	if err != nil {
		t.Fatal(err)
	}
	tlsText := strings.NewReplacer("company-y.example", "bank.example", "2016-04-01", "2026-11-26").Replace(string(tls))
	if _, err := tlsrpt.Ingest(ctx, st, strings.NewReader(tlsText), tlsrpt.DefaultLimits(), time.Now()); err != nil {
		t.Fatal(err)
	}
	var adminHash, bankHash string
	w.admin, adminHash = NewToken()
	w.bank, bankHash = NewToken()
	w.none, _ = NewToken()
	cfg := Config{Listen: "inet:127.0.0.1:8080", Tokens: []Token{
		{Name: "admin", Hash: adminHash, Admin: true},
		{Name: "bank", Hash: bankHash, Domains: []string{"Bank.Example"}},
	}}
	dns := txts{"_mta-sts.bank.example": {"v=STSv1; id=20261201"}, "_smtp._tls.bank.example": {"v=TLSRPTv1; rua=mailto:tls@bank.example"}}
	s, err := New(cfg, st, dns, checker{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return day.AddDate(0, 0, 10) }
	w.server = s
	w.srv = httptest.NewServer(s.Handler())
	t.Cleanup(w.srv.Close)
	return w
}

func (w *world) get(t *testing.T, token, path string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", w.srv.URL+path, nil)
	if token != "" {
		req.SetBasicAuth("anyone", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// A page without a token, or with one that is not configured: 401.
// Every page: the headers that keep it to itself.
func TestAuth(t *testing.T) {
	w := newWorld(t)
	for _, tok := range []string{"", w.none, w.bank + "x"} {
		code, _, h := w.get(t, tok, "/")
		if code != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("token %q: %d %v", tok, code, h)
		}
	}
	req, _ := http.NewRequest("GET", w.srv.URL+"/domain/bank.example/", nil)
	req.Header.Set("Authorization", "Bearer "+w.bank)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("Bearer: %v %v", resp.StatusCode, err)
	}
	code, _, h := w.get(t, w.bank, "/")
	if code != 200 || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") || h.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %d %v", code, h)
	}
	// Read-only: any other method is refused, token or not.
	resp, err := http.Post(w.srv.URL+"/domain/bank.example/", "text/plain", strings.NewReader("x"))
	if err != nil || resp.StatusCode != 405 {
		t.Errorf("POST: %v %v", resp.StatusCode, err)
	}
}

// A customer's token shows its domain and nothing of another's, not
// even through a report id in the URL; the admin's shows every domain.
func TestIsolation(t *testing.T) {
	w := newWorld(t)
	_, body, _ := w.get(t, w.bank, "/")
	if !strings.Contains(body, `data-domain="bank.example"`) || strings.Contains(body, "other.example") {
		t.Errorf("the customer's index:\n%s", body)
	}
	for _, p := range []string{
		"/domain/other.example/",
		"/domain/other.example/report/" + w.otherID,
		"/domain/bank.example/report/" + w.otherID,
		"/domain/bank.example/report/" + w.otherID + "/download",
		"/domain/other.example/report/" + w.otherID + "/download",
		"/domain/bank.example/report/" + w.otherID + "/file",
		"/domain/other.example/report/" + w.otherID + "/file",
		"/domain/bank.example/report/nonexistent",
		"/domain/BANK.example./report/../../other.example/",
	} {
		code, body, _ := w.get(t, w.bank, p)
		if code != 404 || strings.Contains(body, "other.example") || strings.Contains(body, "198.51.100.7") {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	_, body, _ = w.get(t, w.admin, "/")
	if !strings.Contains(body, `data-domain="bank.example"`) || !strings.Contains(body, `data-domain="other.example"`) {
		t.Errorf("the admin's index:\n%s", body)
	}
	if code, _, _ := w.get(t, w.admin, "/domain/other.example/report/"+w.otherID); code != 200 {
		t.Errorf("the admin's drill-down: %d", code)
	}
}

// The domain page shows the fixture's numbers: totals, the chart's days,
// the failing source first, the alignment breakdown; drill-down and
// download work.
func TestDomainPage(t *testing.T) {
	w := newWorld(t)
	code, body, _ := w.get(t, w.bank, "/domain/bank.example/")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for _, want := range []string{
		`data-reports="3" data-messages="38" data-pass="30" data-fail="8"`,
		`data-days="3" data-peak="23"`,
		`<g class="day" data-date="2026-11-25" data-pass="20" data-fail="3" data-rate="87.0">`,
		`<g class="day" data-date="2026-11-26" data-pass="0" data-fail="0">`,
		`<g class="day" data-date="2026-11-27" data-pass="10" data-fail="5" data-rate="66.7">`,
		`<polyline class="rate" points="`,
		`<td class="auth">evil.example s=forged pass</td><td class="auth">evil.example fail</td>`,
		`<a href="/domain/bank.example/?org=Yahoo">Yahoo</a></td><td>1</td><td>10</td><td>0</td><td>100.0 %</td>`,
		`<g class="day" data-date="2026-11-26" data-ok="5326" data-failed="303">`, // the TLS chart
		`<td data-n="30">30</td>`, // DKIM and SPF
		`<td data-n="8">8</td>`,   // neither
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	// One organisation's days; a name no report has draws empty days,
	// and what the URL says is escaped.
	_, yahoo, _ := w.get(t, w.bank, "/domain/bank.example/?org=Yahoo")
	for _, want := range []string{`data-org="Yahoo"`, `<g class="day" data-date="2026-11-25" data-pass="10" data-fail="0" data-rate="100.0">`,
		`<g class="day" data-date="2026-11-27" data-pass="0" data-fail="0">`, `data-reports="3"`} {
		if !strings.Contains(yahoo, want) {
			t.Errorf("Yahoo's days lack %s", want)
		}
	}
	if _, odd, _ := w.get(t, w.bank, "/domain/bank.example/?org=%3Cscript%3E"); strings.Contains(odd, "<script>") || !strings.Contains(odd, `data-peak="0"`) {
		t.Error("an organisation no report has")
	}
	// A new report changes the page at once (what was added up before
	// is kept only while the reports stay the same).
	x := fixture("Mailru", "new-1", "bank.example", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), 1)
	if _, err := dmarcreport.Ingest(context.Background(), w.st, strings.NewReader(x), dmarcreport.Limits{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, again, _ := w.get(t, w.bank, "/domain/bank.example/"); !strings.Contains(again, `data-reports="4" data-messages="49"`) {
		t.Error("the page did not change with a new report")
	}
	// What the domain publishes, with the selector the reports saw in
	// its own signatures (not the one a forger's signature named), and
	// whatever DNS says escaped.
	for _, want := range []string{"<code>v=spf1 ip4:192.0.2.1 -all</code>", "<th>DKIM s2026</th><td>rsa 2048 bits", "&lt;script&gt;alert(1)&lt;/script&gt; from DNS",
		// p=reject published: the suggestion keeps it.
		`_dmarc.bank.example. 3600 IN TXT &#34;v=DMARC1; p=reject&#34;`, "keep the published policy",
		"published, id=20261201", "<td>mailto:tls@bank.example</td>"} {
		if !strings.Contains(body, want) {
			t.Errorf("the published records lack %s", want)
		}
	}
	if strings.Contains(body, "DKIM forged") || strings.Contains(body, "<script>") {
		t.Error("a forger's selector or unescaped text on the page")
	}
	rows := regexp.MustCompile(`<tr data-ip="([^"]+)" data-fail="(\d+)"`).FindAllStringSubmatch(body, -1)
	if len(rows) != 2 || rows[0][1] != "198.51.100.7" || rows[0][2] != "8" {
		t.Errorf("sources, failing first: %v", rows)
	}
	code, body, _ = w.get(t, w.bank, "/domain/bank.example/report/"+w.bankID)
	if code != 200 || !strings.Contains(body, "Report r2") || !strings.Contains(body, "<td>198.51.100.7</td><td>5</td><td>reject</td>") {
		t.Errorf("drill-down: %d\n%s", code, body)
	}
	code, body, h := w.get(t, w.bank, "/domain/bank.example/report/"+w.bankID+"/download")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Disposition"), "attachment;") || !strings.Contains(body, `"report_id": "r2"`) || !strings.Contains(body, `"source_ip": "198.51.100.7"`) {
		t.Errorf("download: %d %v\n%s", code, h, body)
	}
	// The file as received, byte for byte, under a name of ours.
	code, body, h = w.get(t, w.bank, "/domain/bank.example/report/"+w.bankID+"/file")
	want := fixture("Google", "r2", "bank.example", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), 5)
	if code != 200 || body != want || h.Get("Content-Type") != "application/xml" || h.Get("Content-Disposition") != `attachment; filename="bank.example-`+w.bankID+`.xml"` {
		t.Errorf("file: %d %v\n%s", code, h, body)
	}
}

// BenchmarkDomainPageYear: the domain page for a year of daily reports
// from 50 organisations (18,250 reports), rendered whole: by a server
// that just started (the day tallies read from the store), and by one
// that has the page's figures in memory.
func BenchmarkDomainPageYear(b *testing.B) {
	st, err := store.OpenEmbedded(filepath.Join(b.TempDir(), "s.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchDomainPage(b, st)
}

// BenchmarkDomainPageYearRedis: the same with the reports in Redis.
func BenchmarkDomainPageYearRedis(b *testing.B) {
	r := storetest.StartRedis(b, "")
	st, err := store.OpenRedis(store.RedisConfig{Mode: store.ModeSingle, Addrs: []string{r.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	benchDomainPage(b, st)
}

func benchDomainPage(b *testing.B, st store.Store) {
	ctx := context.Background()
	end := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for d := range 365 {
		for o := range 50 {
			x := fixture(fmt.Sprintf("Org%02d", o), fmt.Sprintf("y%d-%d", d, o), "bank.example", end.AddDate(0, 0, -d), o%4)
			if _, err := dmarcreport.Ingest(ctx, st, strings.NewReader(x), dmarcreport.Limits{}, end); err != nil {
				b.Fatal(err)
			}
		}
	}
	tok, hash := NewToken()
	s, err := New(Config{Tokens: []Token{{Name: "bank", Hash: hash, Domains: []string{"bank.example"}}}}, st, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	s.now = func() time.Time { return end.Add(time.Hour) }
	h := s.Handler()
	render := func(b *testing.B) {
		req := httptest.NewRequest("GET", "/domain/bank.example/", nil)
		req.SetBasicAuth("", tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), `data-days="365"`) || !strings.Contains(rec.Body.String(), `data-reports="18250"`) {
			b.Fatalf("%d", rec.Code)
		}
	}
	// The first render after the ingests (the tallies they wrote), then
	// every render of a server that just started (nothing in memory),
	// then renders of a server that has the page's figures in memory.
	t0 := time.Now()
	render(b)
	first := time.Since(t0)
	b.Run("started", func(b *testing.B) {
		for range b.N {
			s.mu.Lock()
			clear(s.recent)
			s.mu.Unlock()
			render(b)
		}
		b.ReportMetric(float64(first.Milliseconds()), "first-render-ms")
	})
	b.Run("warm", func(b *testing.B) {
		for range b.N {
			render(b)
		}
	})
	// A store of reports ingested before the tallies existed: the first
	// render makes them all.
	rr := store.NewReceivedReports(st, dmarcreport.ReceivedKeep)
	days, _ := rr.Days(ctx, "bank.example")
	for _, d := range days {
		rr.PutDay(ctx, "bank.example", d.Date, nil)
	}
	s.mu.Lock()
	clear(s.recent)
	s.mu.Unlock()
	t0 = time.Now()
	render(b)
	b.Logf("first render %v after the ingests, %v without tallies", first.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
}

// The admin page: the reports that could not be read (from the failed
// folder, the newest first), how sending went, the suppressed
// addresses; for the admin only.
func TestAdminPage(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	dir := t.TempDir()
	w.server.FailedDir = dir
	for i, why := range []string{"no report attachment in the message (parts: text/plain)", "gzip: invalid header"} {
		name := fmt.Sprintf("20261201T10000%dZ-abcd.eml", i)
		os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600)
		os.WriteFile(filepath.Join(dir, name+".reason"), []byte(fmt.Sprintf("2026-12-01T10:00:0%dZ\nstdin\n%s\n", i, why)), 0o600)
	}
	marks := store.NewReportMarks(w.st)
	begin := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	marks.Put(ctx, store.ReportMark{Domain: "sender.example", Begin: begin, Address: "dmarc@sender.example", Status: "sent", At: begin.Add(25 * time.Hour)})
	marks.Put(ctx, store.ReportMark{Domain: "big.example", Begin: begin, Address: "r@big.example", Status: "refused", Detail: "550 5.7.1 no thanks", At: begin.Add(26 * time.Hour)})
	store.NewSuppressions(w.st).Add(ctx, store.Suppression{Address: "gone@old.example", Reason: "bounced", Added: begin})

	if code, _, _ := w.get(t, w.bank, "/admin"); code != 404 {
		t.Errorf("a customer's token on the admin page: %d", code)
	}
	code, body, _ := w.get(t, w.admin, "/admin")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for _, want := range []string{
		`data-total="2"`, "gzip: invalid header", "20261201T100001Z-abcd.eml",
		`data-sent="1"`, "550 5.7.1 no thanks", "gone@old.example",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the admin page lacks %s", want)
		}
	}
	if i, j := strings.Index(body, "100001Z"), strings.Index(body, "100000Z"); i < 0 || j < i {
		t.Error("the newest failure is not first")
	}
}

// With web.tls_cert and web.tls_key the view is served over HTTPS, and
// the token is checked there as over HTTP.
func TestServeTLS(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "reports.example"}, DNSNames: []string{"reports.example"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	w.server.cfg.TLSCert, w.server.cfg.TLSKey = certFile, keyFile
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.server.Serve(ctx, ln) }()
	pool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(der)
	pool.AddCert(cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(token string) int {
		req, _ := http.NewRequest("GET", "https://"+ln.Addr().String()+"/domain/bank.example/", nil)
		if token != "" {
			req.SetBasicAuth("", token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(""); c != 401 {
		t.Errorf("HTTPS without a token: %d", c)
	}
	if c := get(w.bank); c != 200 {
		t.Errorf("HTTPS with the token: %d", c)
	}
	// Plain HTTP to the HTTPS port gets nothing of the view.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/domain/bank.example/"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || strings.Contains(string(b), "bank.example") {
			t.Errorf("plain HTTP: %d %q", resp.StatusCode, b)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}
