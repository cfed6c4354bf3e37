package policyd

import (
	"bufio"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/setting"
)

// validAction is what Postfix accepts from us: DUNNO, a FILTER, or a
// 4xx/5xx reply with a matching enhanced code, on one line.
var validAction = regexp.MustCompile(`^(DUNNO|FILTER \S+|([45])\d\d ([45])\.\d{1,3}\.\d{1,3} [^\r\n]+)$`)

// FuzzEvaluate sends arbitrary policy requests, in the MX and the
// submission context, through the whole pipeline (test DNS, embedded
// store). Every answer must be one Postfix can read, a refusal must name
// its check and carry a valid reply, and nothing may panic.
func FuzzEvaluate(f *testing.F) {
	mapPath := filepath.Join(f.TempDir(), "senders")
	if err := os.WriteFile(mapPath, []byte("alice @example.test\n192.0.2.0/24 *\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	senders, err := sendermap.NewHolder(mapPath)
	if err != nil {
		f.Fatal(err)
	}
	fx := newFixture(f, func(c *Config) {
		c.Submission = Submission{Senders: senders,
			Classes: map[string]RateClass{"default": {Messages: 3, Recipients: 5, Window: time.Hour}},
			Bulk:    Bulk{Filter: "smtp:[127.0.0.1]:2525", MinRecipients: 3}}
	})
	for _, s := range []string{
		"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.20\nhelo_name=x.example\nsender=a@x.example\nrecipient=alice@example.test\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=2001:db8::1\nclient_name=unknown\nhelo_name=[192.0.2.1]\nsender=\nrecipient=alice@example.test\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\npolicy_context=submission\nsasl_username=alice\nsender=ceo@bank.example\nrecipient=x@example.org\ninstance=1\nclient_address=198.51.100.7\n\n",
		"request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\npolicy_context=submission\nsasl_username=alice\nsender=alice@example.test\nrecipient_count=99\ninstance=2\nclient_address=198.51.100.7\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=not-an-ip\nhelo_name=mx1.example.test\n\n",
		"request=junk\n\n",
		"protocol_state=DATA\nclient_address=192.0.2.1\n\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		req, err := ReadRequest(bufio.NewReader(strings.NewReader(text)))
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d := fx.p.Evaluate(ctx, req)
		m := validAction.FindStringSubmatch(d.Action)
		if m == nil {
			t.Fatalf("action %q is not one Postfix reads", d.Action)
		}
		if m[2] != m[3] {
			t.Fatalf("action %q: code and enhanced code disagree", d.Action)
		}
		if d.Action != "DUNNO" && d.Check == "" {
			t.Fatalf("action %q names no check", d.Action)
		}
		if m[2] != "" && (d.Reply == nil || d.Reply.Valid() != nil || d.Reply.String() != d.Action) {
			t.Fatalf("action %q without its valid reply %+v", d.Action, d.Reply)
		}
		if d.Context != "mx" && d.Context != "submission" && (d.Context != "" || req.Get("request") == "smtpd_access_policy") {
			t.Fatalf("context %q", d.Context)
		}
	})
}

// An unknown policy_context gets the MX checks, says so, and does not
// become a metric label of its own.
func TestUnknownPolicyContext(t *testing.T) {
	fx := newFixture(t, nil)
	req := rcptReq("192.0.2.10", "mail.good.example", "a@good.example", "alice@example.test")
	req["policy_context"] = "backup-mx"
	d := fx.p.Evaluate(context.Background(), req)
	if d.Context != "mx" || len(d.Contributions) == 0 || d.Contributions[0].Note != `unknown policy_context "backup-mx": MX checks` {
		t.Fatalf("context %q, contributions %+v", d.Context, d.Contributions)
	}
}

// A known list's codes apply when none are configured: an answer outside
// them (a quota message, a public resolver's refusal) is no listing.
func TestListedCodes(t *testing.T) {
	lists := withKnownCodes([]List{{Zone: "ZEN.spamhaus.org"}, {Zone: "bl.test"}, {Zone: "zen.spamhaus.org", Codes: setting.Networks("127.0.0.1/32")}})
	for _, tc := range []struct {
		list   int
		answer string
		want   bool
	}{
		{0, "127.0.0.2", true},
		{0, "127.0.0.4", true},
		{0, "127.0.0.8", false}, // not a zen code
		{0, "127.255.255.254", false},
		{1, "127.0.0.5", true}, // unknown list: any 127/8 answer but 127.0.0.1
		{1, "127.0.0.1", false},
		{1, "10.0.0.2", false},
		{2, "127.0.0.1", true}, // configured codes win
		{2, "127.0.0.2", false},
	} {
		if got, why := lists[tc.list].listed(netip.MustParseAddr(tc.answer)); got != tc.want {
			t.Errorf("%s answers %s: listed=%v (%s), want %v", lists[tc.list].Zone, tc.answer, got, why, tc.want)
		}
	}
}
