package policyd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"testing"

	"github.com/wehr/wehr/setting"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The decisions of a table of requests, each in a fresh world at the
// fixture's fixed time: any change of a decision, a score, a note or a
// reply's wording shows in review (go test -update rewrites the file).
func TestDecisionsGolden(t *testing.T) {
	with := func(r Request, kv ...string) Request {
		for i := 0; i+1 < len(kv); i += 2 {
			r[kv[i]] = kv[i+1]
		}
		return r
	}
	tests := []struct {
		name string
		req  Request
	}{
		{"clean client", rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "alice@example.test")},
		{"listed", rcptReq("192.0.2.20", "mail.x.example", "a@x.example", "alice@example.test")},
		{"list error code", rcptReq("192.0.2.21", "mail.x.example", "a@x.example", "alice@example.test")},
		{"no reverse DNS", rcptReq("192.0.2.30", "mail.x.example", "prvs=1234abcd=a@x.example", "Alice@Example.test")},
		{"dynamic reverse name, bare HELO", rcptReq("192.0.2.40", "home", "a@x.example", "alice@example.test")},
		{"allowlisted", rcptReq("192.0.2.50", "mail.y.example", "a@y.example", "alice@example.test")},
		{"HELO claims to be us", rcptReq("192.0.2.30", "mx1.example.test", "a@x.example", "bob@example.test")},
		{"HELO an address literal", rcptReq("192.0.2.30", "[192.0.2.30]", "a@x.example", "bob@example.test")},
		{"postmaster exempt", rcptReq("192.0.2.20", "x", "a@x.example", "postmaster@example.test")},
		{"SASL login in the MX context", with(rcptReq("192.0.2.20", "laptop", "a@x.example", "bob@example.test"), "sasl_username", "alice", "policy_context", "mx")},
		{"unknown context", with(rcptReq("192.0.2.30", "laptop", "a@x.example", "bob@example.test"), "policy_context", "port26")},
		{"SPF-allowlisted sender", rcptReq("192.0.2.30", "mta.bigsender.example", "bounce@bigsender.example", "alice@example.test")},
		{"loopback skipped", rcptReq("127.0.0.1", "localhost", "root@mx1.example.test", "alice@example.test")},
		{"not RCPT", with(rcptReq("192.0.2.30", "laptop", "a@x.example", ""), "protocol_state", "DATA")},
		{"no client address", rcptReq("", "laptop", "a@x.example", "alice@example.test")},
		{"not a policy request", with(rcptReq("192.0.2.30", "laptop", "a@x.example", "alice@example.test"), "request", "junk")},
	}
	var out bytes.Buffer
	for _, tc := range tests {
		f := newFixture(t, func(c *Config) {
			c.SkipNetworks = setting.Networks("127.0.0.0/8", "::1/128")
		})
		d := f.p.Evaluate(context.Background(), tc.req)
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("# " + tc.name + "\n")
		out.Write(b)
		out.WriteString("\n")
	}
	path := "testdata/decisions.golden"
	if *update {
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestDecisionsGolden -update writes it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("%s differs (review, then go test -update):\n--- got\n%s\n--- want\n%s", path, out.Bytes(), want)
	}
}
