package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/wehr/wehr/web"
)

// webReport is a DMARC report from org about domain for the UTC day
// that starts at day: 10 messages from 192.0.2.1 pass, fail messages
// from 198.51.100.7 fail.
func webReport(org, id, domain string, day time.Time, fail int) string {
	return fmt.Sprintf(`<?xml version="1.0"?><feedback><report_metadata><org_name>%s</org_name><email>r@reporter.example</email><report_id>%s</report_id>`+
		`<date_range><begin>%d</begin><end>%d</end></date_range></report_metadata><policy_published><domain>%s</domain><p>reject</p></policy_published>`+
		`<record><row><source_ip>192.0.2.1</source_ip><count>10</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>%[5]s</header_from></identifiers><auth_results><spf><domain>%[5]s</domain><result>pass</result></spf></auth_results></record>`+
		`<record><row><source_ip>198.51.100.7</source_ip><count>%d</count><policy_evaluated><disposition>reject</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row><identifiers><header_from>%[5]s</header_from></identifiers><auth_results><spf><domain>evil.example</domain><result>fail</result></spf></auth_results></record>`+
		`</feedback>`, org, id, day.Unix(), day.Add(24*time.Hour-time.Second).Unix(), domain, fail)
}

// TestWebInBrowser: the web view of a running wehr serve, in a headless
// Chromium. Reports ingested with wehr dmarc ingest show on the domain's
// page: the totals, and the chart's bars read back from the SVG; the
// drill-down to a report shows its records and its download arrives;
// the customer's token reaches nothing of another domain, direct URLs
// included, nor the admin page; the admin's shows every domain and the
// admin page; a page without a token is 401. Screenshots of the pages are
// kept in a directory the log names.
func TestWebInBrowser(t *testing.T) {
	ports, err := FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	adminTok, adminHash := web.NewToken()
	bankTok, bankHash := web.NewToken()
	dir := filepath.Join(w.dir, "web")
	os.MkdirAll(dir, 0o755)
	wh, err := StartWehr(w.wehr.Bin, dir, fmt.Sprintf(`hostname: mx.example.test
milter: {listen: "inet:127.0.0.1:%[1]d"}
policyd: {listen: "inet:127.0.0.1:%[2]d"}
store: {path: %[4]s/wehr.db, admin_socket: %[4]s/admin.sock}
web:
  listen: "inet:127.0.0.1:%[3]d"
  tokens:
    - {name: admin, hash: "%[5]s", admin: true}
    - {name: bank, hash: "%[6]s", domains: [bank.example]}
`, ports[0], ports[1], ports[2], dir, adminHash, bankHash), w.dns.Addr(), ports[0])
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Stop()
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[2])

	// Three days of reports about bank.example from two organisations,
	// one about other.example.
	day := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -5)
	for i, r := range []struct {
		org, domain string
		day, fail   int
	}{{"Google", "bank.example", 0, 3}, {"Yahoo", "bank.example", 0, 0}, {"Google", "bank.example", 2, 5}, {"Google", "other.example", 1, 7}} {
		f := filepath.Join(dir, fmt.Sprintf("r%d.xml", i))
		os.WriteFile(f, []byte(webReport(r.org, fmt.Sprintf("web-%d", i), r.domain, day.AddDate(0, 0, r.day), r.fail)), 0o644)
		if out, err := wehrCmd(t, wh.Config, "dmarc", "ingest", f); err != nil {
			t.Fatalf("ingest: %v %s", err, out)
		}
	}
	// The other domain's report id, as a forger of URLs would guess it.
	otherID := ""
	if out, err := wehrCmd(t, wh.Config, "--json", "dmarc", "reports", "list", "--domain", "other.example"); err == nil {
		if i := strings.Index(out, `"id":"`); i >= 0 {
			otherID = out[i+6 : i+6+20]
		}
	}
	if otherID == "" {
		t.Fatal("no id for other.example's report")
	}

	shots, err := os.MkdirTemp("", "wehr-web-screenshots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)
	downloads := t.TempDir()

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1200, 1600))...)
	defer cancel()
	// browse is a browser tab that sends token (none: "").
	browse := func(token string) (context.Context, context.CancelFunc) {
		ctx, cancel := chromedp.NewContext(actx)
		ctx, cancel2 := context.WithTimeout(ctx, 60*time.Second)
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			t.Fatalf("chromium: %v", err)
		}
		if token != "" {
			if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{
				"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("reader:"+token)),
			}}); err != nil {
				t.Fatalf("chromium: %v", err)
			}
		}
		return ctx, func() { cancel2(); cancel() }
	}
	open := func(ctx context.Context, path string) int64 {
		t.Helper()
		resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+path))
		if err != nil || resp == nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.Status
	}
	shot := func(ctx context.Context, name string) {
		t.Helper()
		img, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // PNG
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		os.WriteFile(filepath.Join(shots, name+".png"), img, 0o644)
	}

	// The customer.
	ctx, done := browse(bankTok)
	defer done()
	if st := open(ctx, "/domain/bank.example/"); st != 200 {
		t.Fatalf("the domain's page: %d", st)
	}
	totals, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.assign({}, document.querySelector('#totals').dataset)`))
	if err != nil {
		t.Fatal(err)
	}
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll('#daily g.day')].map(g => [g.dataset.date, g.dataset.pass, g.dataset.fail,
		String(g.querySelectorAll('rect').length)])`))
	if err != nil {
		t.Fatal(err)
	}
	shot(ctx, "domain")
	if totals["reports"] != "3" || totals["messages"] != "38" || totals["pass"] != "30" || totals["fail"] != "8" {
		t.Errorf("totals %v", totals)
	}
	want := [][]string{
		{day.Format(time.DateOnly), "20", "3", "2"},
		{day.AddDate(0, 0, 1).Format(time.DateOnly), "0", "0", "0"},
		{day.AddDate(0, 0, 2).Format(time.DateOnly), "10", "5", "2"},
	}
	if fmt.Sprint(bars) != fmt.Sprint(want) {
		t.Errorf("the chart's bars %v, want %v", bars, want)
	}
	// One organisation's days, by its link in the table.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#orgs a[href$="org=Yahoo"]`), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS(`#daily[data-org="Yahoo"]`))); err != nil {
		t.Fatalf("Yahoo's days: %v", err)
	}
	yahoo, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll('#daily g.day')].map(g => [g.dataset.pass, g.dataset.fail, g.dataset.rate || "-"])`))
	if err != nil || fmt.Sprint(yahoo) != "[[10 0 100.0] [0 0 -] [0 0 -]]" {
		t.Errorf("Yahoo's days %v %v", yahoo, err)
	}
	shot(ctx, "domain-yahoo")
	open(ctx, "/domain/bank.example/")

	// Drill-down, then the download.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#reports a`), chromedp.NodeVisible), chromedp.WaitVisible(chromedp.CSS(`#records`))); err != nil {
		t.Fatalf("drill-down: %v", err)
	}
	if records, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#records tbody tr').length`)); err != nil || records != 2 {
		t.Errorf("drill-down: %d records, %v", records, err)
	}
	shot(ctx, "report")
	yes := true
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: &yes}); err != nil {
		t.Fatalf("download behaviour: %v", err)
	}
	// download clicks the link that matches css and returns the file
	// Chromium saved.
	download := func(css string) []byte {
		t.Helper()
		progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(css), chromedp.NodeVisible)); err != nil {
			t.Fatalf("download %s: %v", css, err)
		}
		guid := ""
		dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
		defer dcancel()
		for ev, err := range progress {
			if err != nil || dctx.Err() != nil {
				break
			}
			if ev.State == browser.DownloadProgressStateCompleted {
				guid = ev.GUID
				break
			}
		}
		if guid == "" {
			t.Errorf("download %s: none completed", css)
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(downloads, guid))
		return b
	}
	if b := download(`a[href$="/download"]`); !strings.Contains(string(b), `"source_ip": "198.51.100.7"`) || !strings.Contains(string(b), `"org_name"`) {
		t.Errorf("the JSON download: %.200s", b)
	}
	// The newest report's file as it was ingested, byte for byte.
	if b, want := download(`a[href$="/file"]`), webReport("Google", "web-2", "bank.example", day.AddDate(0, 0, 2), 5); string(b) != want {
		t.Errorf("the report file: %.300s", b)
	}

	// Nothing of another domain, however the URL is made.
	for _, p := range []string{
		"/domain/other.example/",
		"/domain/other.example/report/" + otherID,
		"/domain/bank.example/report/" + otherID,
		"/domain/bank.example/report/" + otherID + "/download",
		"/domain/bank.example/report/" + otherID + "/file",
	} {
		st := open(ctx, p)
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`body`)))
		if st != http.StatusNotFound || strings.Contains(body, "other.example") || strings.Contains(body, "198.51.100.7") {
			t.Errorf("%s: status %d, %q", p, st, body)
		}
	}
	open(ctx, "/")
	if index, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#domains`))); err != nil || !strings.Contains(index, "bank.example") || strings.Contains(index, "other.example") {
		t.Errorf("the customer's index: %q %v", index, err)
	}

	// The admin sees both domains.
	actx2, done2 := browse(adminTok)
	defer done2()
	open(actx2, "/")
	if index, err := chromedp.Run(actx2, chromedp.Text(chromedp.CSS(`#domains`))); err != nil || !strings.Contains(index, "bank.example") || !strings.Contains(index, "other.example") {
		t.Errorf("the admin's index: %q %v", index, err)
	}
	shot(actx2, "admin-index")
	if st := open(actx2, "/admin"); st != 200 {
		t.Errorf("the admin page: %d", st)
	}
	if sending, err := chromedp.Run(actx2, chromedp.Text(chromedp.CSS(`#sending`))); err != nil || !strings.Contains(sending, "Sent: 0") {
		t.Errorf("the admin page: %q %v", sending, err)
	}
	shot(actx2, "admin")
	if st := open(ctx, "/admin"); st != http.StatusNotFound {
		t.Errorf("the customer on the admin page: %d", st)
	}

	// No token: 401.
	nctx, done3 := browse("")
	defer done3()
	// Headless Chromium cannot ask for the password: the navigation
	// fails, and the answer it got says 401.
	responses := chromedp.Events(nctx, network.ResponseReceived)
	_, navErr := chromedp.Run(nctx, chromedp.NavigateResponse(base+"/domain/bank.example/"))
	status := int64(0)
	for ev, err := range responses {
		if err != nil {
			break
		}
		if ev.Type == network.ResourceTypeDocument {
			status = ev.Response.Status
			break
		}
	}
	if status != http.StatusUnauthorized {
		t.Errorf("without a token: status %d (%v), want 401", status, navErr)
	}
}
