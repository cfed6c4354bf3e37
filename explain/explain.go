// Package explain reads wehr's log and says, in plain words, what
// happened to one message and why: the policy service's answers at
// RCPT and the milter's verdict, found by Postfix queue id or
// Message-ID (wehr explain).
package explain

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Line is one log line's fields (time, level, msg and the attributes).
type Line map[string]string

// Parse reads a log line as slog writes it, text (key=value) or JSON,
// after any prefix a log collector adds ("Dec 01 ... wehr[42]: ").
// It returns nil for a line that is not wehr's.
func Parse(s string) Line {
	if i := strings.Index(s, "{\""); i >= 0 && strings.HasSuffix(strings.TrimSpace(s), "}") {
		var m map[string]any
		if json.Unmarshal([]byte(s[i:]), &m) == nil {
			l := Line{}
			for k, v := range m {
				l[strings.ToLower(k)] = fmt.Sprint(v)
			}
			return l
		}
	}
	i := strings.Index(s, "time=")
	if i < 0 {
		return nil
	}
	s = s[i:]
	l := Line{}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			// A quoted value: find its end, escapes included.
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				end = len(s) - 1
			}
			if u, err := strconv.Unquote(s[:end+1]); err == nil {
				val = u
			} else {
				val = s[1:end]
			}
			s = s[end+1:]
		} else {
			sp := strings.IndexByte(s, ' ')
			if sp < 0 {
				sp = len(s)
			}
			val, s = s[:sp], s[sp:]
		}
		l[key] = val
	}
	return l
}

// Story is what the log says about one message.
type Story struct {
	QueueID, MessageID string
	Milter             []Line // the milter's lines of the message
	Policy             []Line // the policy service's answers for it
}

// QueueID returns the queue id of the message whose Message-ID is
// messageID, from the milter's lines in r ("" if none).
func QueueID(r io.Reader, messageID string) (string, error) {
	want := strings.Trim(strings.TrimSpace(messageID), "<>")
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if l := Parse(sc.Text()); l != nil && strings.HasPrefix(l["msg"], "milter: ") && l["queue_id"] != "" &&
			strings.Trim(l["message_id"], "<>") == want {
			return l["queue_id"], nil
		}
	}
	return "", sc.Err()
}

// Find collects the lines of the message with Postfix queue id qid from
// r. The policy service's lines are matched by queue id, or, when
// Postfix did not send one (RCPT comes before the queue file), by
// client address and sender in the 15 minutes before the milter's
// verdict.
func Find(r io.Reader, qid string) (Story, error) {
	st := Story{QueueID: qid}
	var policy []Line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l := Parse(sc.Text())
		if l == nil {
			continue
		}
		msg := l["msg"]
		switch {
		case strings.HasPrefix(msg, "milter: ") && l["queue_id"] == qid:
			if l["message_id"] != "" {
				st.MessageID = l["message_id"]
			}
			st.Milter = append(st.Milter, l)
		case strings.HasPrefix(msg, "policyd: ") && l["action"] != "":
			// Kept only while they may belong to it: same client and
			// sender as a later verdict, or its queue id.
			policy = append(policy, l)
			if len(policy) > 100000 {
				policy = policy[len(policy)-50000:]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("explain: reading the log: %w", err)
	}
	return findByQueue(policy, st)
}

func findByQueue(policy []Line, st Story) (Story, error) {
	if len(st.Milter) == 0 {
		for _, p := range policy {
			if p["queue_id"] != "" && p["queue_id"] == st.QueueID {
				st.Policy = append(st.Policy, p)
			}
		}
		return st, nil
	}
	m := st.Milter[len(st.Milter)-1]
	mt, _ := time.Parse(time.RFC3339Nano, m["time"])
	for _, p := range policy {
		switch {
		case p["queue_id"] != "":
			if p["queue_id"] == st.QueueID {
				st.Policy = append(st.Policy, p)
			}
		case p["client"] == m["client"] && strings.EqualFold(p["sender"], m["mail_from"]):
			pt, err := time.Parse(time.RFC3339Nano, p["time"])
			if err == nil && !mt.IsZero() && (pt.After(mt) || mt.Sub(pt) > 15*time.Minute) {
				continue
			}
			st.Policy = append(st.Policy, p)
		}
	}
	return st, nil
}

// Explain writes the story in plain words.
func Explain(w io.Writer, st Story) {
	if len(st.Milter) == 0 && len(st.Policy) == 0 {
		fmt.Fprintln(w, "Nothing in the log about this message. Is it the Postfix queue id (the hex id in Postfix's log) or the Message-ID, and is the log the right one (--log)?")
		return
	}
	id := st.QueueID
	if st.MessageID != "" {
		id += " " + st.MessageID
	}
	fmt.Fprintf(w, "Message %s\n", strings.TrimSpace(id))
	for _, p := range st.Policy {
		verb := "let it through"
		switch a := p["action"]; {
		case strings.HasPrefix(a, "4"):
			verb = "answered " + a + " (the client is to retry later)"
		case strings.HasPrefix(a, "5"):
			verb = "refused it: " + a
		case strings.HasPrefix(a, "FILTER"):
			verb = "routed it: " + a
		}
		fmt.Fprintf(w, "- %s at RCPT for %s (client %s, helo %s, sender %s): the policy service %s; deciding check %s, score %s",
			p["time"], p["recipient"], p["client"], p["helo"], orNone(p["sender"]), verb, orNone(p["check"]), orNone(p["score"]))
		if c := p["checks"]; c != "" {
			fmt.Fprintf(w, "; checks: %s", c)
		}
		fmt.Fprintln(w)
	}
	for _, m := range st.Milter {
		msg := strings.TrimPrefix(m["msg"], "milter: ")
		switch msg {
		case "accept", "quarantine", "refused", "tempfail":
		default:
			fmt.Fprintf(w, "- %s milter: %s", m["time"], msg)
			for _, k := range []string{"reason", "why", "header", "error"} {
				if m[k] != "" {
					fmt.Fprintf(w, " (%s: %s)", k, m[k])
				}
			}
			fmt.Fprintln(w)
			continue
		}
		what := map[string]string{"accept": "accepted it", "quarantine": "accepted it into quarantine (Junk)",
			"refused": "refused it: " + m["reply"], "tempfail": "answered 4xx: " + m["reply"]}[msg]
		fmt.Fprintf(w, "- %s end of data (client %s, from %s): the milter %s.\n", m["time"], m["client"], orNone(m["mail_from"]), what)
		fmt.Fprintf(w, "  Why: DMARC %s for %s (policy %s, applied %s)", m["dmarc"], orNone(m["from_domain"]), orNone(m["policy"]), orNone(m["disposition"]))
		if m["overrides"] != "" {
			fmt.Fprintf(w, ", overridden by %s", m["overrides"])
		}
		if m["evidence"] != "" {
			fmt.Fprintf(w, ", refused on the evidence %s", m["evidence"])
		}
		if m["check"] != "" {
			fmt.Fprintf(w, ", deciding check %s", m["check"])
		}
		fmt.Fprintf(w, ".\n  Results: SPF %s, DKIM %s, ARC %s, iprev %s.\n", orNone(m["spf"]), orNone(m["dkim"]), orNone(m["arc"]), orNone(m["iprev"]))
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
