package explain

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `time=2026-12-01T10:00:00.000Z level=INFO msg="policyd: 450" instance=a1 client=203.0.113.5 helo=mail.evil.example sender=x@evil.example recipient=alice@example.test context=mx action="450 4.7.1 Greylisted: please retry in 300 seconds" check=greylist score=1 checks="fcrdns: no PTR" duration_ms=1
time=2026-12-01T10:06:00.000Z level=INFO msg="policyd: DUNNO" instance=a2 client=203.0.113.5 helo=mail.evil.example sender=x@evil.example recipient=alice@example.test context=mx action=DUNNO check=none score=1 checks="" duration_ms=1
time=2026-12-01T10:06:01.000Z level=INFO msg="milter: removed a forged header" queue_id=4XyZ1 session=7 header=Authentication-Results why="forged authserv-id mx.example.test"
{"time":"2026-12-01T10:06:01.500Z","level":"INFO","msg":"milter: refused","queue_id":"4XyZ1","session":7,"client":"203.0.113.5","helo":"mail.evil.example","mail_from":"x@evil.example","action":"reject","spf":"pass","dkim":"none","dmarc":"fail","from_domain":"bank.example","policy":"reject","disposition":"reject","overrides":"","evidence":"author_spf_fail","iprev":"fail","arc":"none","message_id":"<m1@evil.example>","reply":"550 5.7.1 Message rejected: bank.example publishes DMARC policy reject","check":"dmarc"}
time=2026-12-01T10:07:00.000Z level=INFO msg="milter: accept" queue_id=5Other session=8 client=192.0.2.10 mail_from=a@good.example action=accept spf=pass dkim=pass:good.example dmarc=pass message_id=<m2@good.example>
`

// A refused spoof: both policy answers (the greylisting, then the retry
// that passed) and the milter's refusal with its reasons, found by
// queue id and by Message-ID; text and JSON lines alike.
func TestExplain(t *testing.T) {
	qid, err := QueueID(strings.NewReader(sample), "m1@evil.example")
	if err != nil || qid != "4XyZ1" {
		t.Fatalf("queue id %q %v", qid, err)
	}
	st, err := Find(strings.NewReader(sample), qid)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Milter) != 2 || len(st.Policy) != 2 || st.MessageID != "<m1@evil.example>" {
		t.Fatalf("%+v", st)
	}
	var b bytes.Buffer
	Explain(&b, st)
	out := b.String()
	for _, want := range []string{
		"Message 4XyZ1 <m1@evil.example>",
		"the policy service answered 450 4.7.1 Greylisted: please retry in 300 seconds (the client is to retry later); deciding check greylist",
		"checks: fcrdns: no PTR",
		"milter: removed a forged header (why: forged authserv-id mx.example.test) (header: Authentication-Results)",
		"the milter refused it: 550 5.7.1 Message rejected: bank.example publishes DMARC policy reject.",
		"Why: DMARC fail for bank.example (policy reject, applied reject), refused on the evidence author_spf_fail, deciding check dmarc.",
		"Results: SPF pass, DKIM none, ARC none, iprev fail.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "5Other") || strings.Contains(out, "good.example") {
		t.Errorf("another message's lines:\n%s", out)
	}
	b.Reset()
	st, _ = Find(strings.NewReader(sample), "NOPE")
	Explain(&b, st)
	if !strings.Contains(b.String(), "Nothing in the log about this message") {
		t.Errorf("unknown id: %s", b.String())
	}
}

func TestParse(t *testing.T) {
	l := Parse(`Dec 01 10:00:00 mx1 wehr[42]: time=2026-12-01T10:00:00Z level=INFO msg="a \"quoted\" b" k=v empty=""`)
	if l["msg"] != `a "quoted" b` || l["k"] != "v" || l["empty"] != "" || l["level"] != "INFO" {
		t.Errorf("%v", l)
	}
	if Parse("not ours") != nil {
		t.Error("a foreign line parsed")
	}
}
