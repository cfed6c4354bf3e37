package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// wehr web token's line goes into the configuration as it is printed;
// wehr serve then serves the web view: 401 without the token, the
// domain's page with it, another domain's 404, and a report ingested
// through wehr dmarc ingest on it.
func TestWebThroughServe(t *testing.T) {
	code, out, errs := wehr(t, "web", "token", "--name", "stalwart", "--domain", "stalw.art")
	m := regexp.MustCompile(`(?s)^token: (\S+)\n# under web.tokens in the configuration:\n(  - \{.*\})\n$`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("%d %q %s", code, out, errs)
	}
	tok, entry := m[1], m[2]
	if c, _, e := wehr(t, "web", "token", "--name", "x"); c != 2 || !strings.Contains(e, "--admin or --domain") {
		t.Errorf("neither --admin nor --domain: %d %s", c, e)
	}
	port := freePort(t)
	cfg, _ := serveStore(t, fmt.Sprintf("web:\n  listen: \"inet:127.0.0.1:%d\"\n  tokens:\n%s\n", port, entry))
	day := time.Now().Add(-48 * time.Hour).Unix()
	xml := fmt.Sprintf(`<?xml version="1.0"?><feedback><report_metadata><org_name>google.com</org_name><email>r@google.com</email><report_id>w1</report_id>`+
		`<date_range><begin>%d</begin><end>%d</end></date_range></report_metadata><policy_published><domain>stalw.art</domain><p>reject</p></policy_published>`+
		`<record><row><source_ip>192.0.2.1</source_ip><count>4</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>`+
		`<identifiers><header_from>stalw.art</header_from></identifiers><auth_results><spf><domain>stalw.art</domain><result>pass</result></spf></auth_results></record></feedback>`, day, day+86399)
	if c, o, e := wehrStdin(t, xml, "--config", cfg, "dmarc", "ingest"); c != 0 {
		t.Fatalf("ingest: %d %s %s", c, o, e)
	}
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
		if token != "" {
			req.SetBasicAuth("", token)
		}
		var resp *http.Response
		var err error
		for i := 0; ; i++ {
			resp, err = http.DefaultClient.Do(req)
			if err == nil || i == 50 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, _ := get("/", ""); c != 401 {
		t.Errorf("without a token: %d", c)
	}
	if c, b := get("/domain/stalw.art/", tok); c != 200 || !strings.Contains(b, `data-reports="1" data-messages="4"`) || !strings.Contains(b, "google.com") {
		t.Errorf("the domain's page: %d\n%s", c, b)
	}
	if c, _ := get("/domain/example.com/", tok); c != 404 {
		t.Errorf("another domain: %d", c)
	}
}
