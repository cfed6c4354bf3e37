package milterbench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/internal/loadstat"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
)

// Options configure a run.
type Options struct {
	Addrs       []string // milters, in chain order: inet:HOST:PORT or unix:/path
	Corpus      string
	Concurrency int
	Duration    time.Duration // 0: one pass over the corpus
	// QuarantineHeader marks quarantine (wehr's marker).
	QuarantineHeader string
}

// Report is what a run measured.
type Report struct {
	Messages  int
	Errors    int
	Elapsed   time.Duration
	PerSecond float64
	loadstat.Latency
	Actions map[string]int
	// Agree and Checked count, per verdict field ("action", "dkim"),
	// the messages whose result matched the manifest, out of those checked.
	Agree, Checked map[string]int
	FirstError     string
}

type message struct {
	e      Entry
	fields [][2]string // name, value without the leading space
	body   []byte
}

func loadCorpus(dir string) ([]message, error) {
	m, err := LoadManifest(dir)
	if err != nil {
		return nil, err
	}
	var out []message
	for _, e := range m.Entries {
		data, err := os.ReadFile(filepath.Join(dir, e.File))
		if err != nil {
			return nil, fmt.Errorf("corpus: %w", err)
		}
		data = bytes.ReplaceAll(bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
		br := bufio.NewReader(bytes.NewReader(data))
		h, err := mailauth.ReadHeader(br, 0)
		if err != nil {
			return nil, fmt.Errorf("corpus: %s: %w", e.File, err)
		}
		body, _ := io.ReadAll(br)
		msg := message{e: e, body: body}
		for _, f := range h.Fields {
			msg.fields = append(msg.fields, [2]string{f.Name, strings.TrimPrefix(strings.ReplaceAll(f.Raw, "\r\n", "\n"), " ")})
		}
		out = append(out, msg)
	}
	return out, nil
}

// Run replays the corpus.
func Run(ctx context.Context, o Options) (*Report, error) {
	msgs, err := loadCorpus(o.Corpus)
	if err != nil {
		return nil, err
	}
	var clients []*milter.Client
	for _, a := range o.Addrs {
		addr, err := listener.ParseAddress(a, true)
		if err != nil {
			return nil, err
		}
		clients = append(clients, milter.NewClient(addr.Network, addr.Address,
			milter.WithReadTimeout(60*time.Second), milter.WithWriteTimeout(60*time.Second)))
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("no milter address (--addr)")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.QuarantineHeader == "" {
		o.QuarantineHeader = "X-Wehr-Quarantine"
	}
	rep := &Report{Actions: map[string]int{}, Agree: map[string]int{}, Checked: map[string]int{}}
	var mu sync.Mutex
	var lat []time.Duration
	var next atomic.Int64
	start := time.Now()
	deadline := start.Add(o.Duration)
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if o.Duration == 0 && i >= len(msgs) {
					return
				}
				if o.Duration > 0 && time.Now().After(deadline) {
					return
				}
				m := msgs[i%len(msgs)]
				t0 := time.Now()
				action, dkimRes, err := replay(clients, m, o.QuarantineHeader)
				d := time.Since(t0)
				mu.Lock()
				rep.Messages++
				if err != nil {
					rep.Errors++
					if rep.FirstError == "" {
						rep.FirstError = fmt.Sprintf("%s: %v", m.e.File, err)
					}
				} else {
					lat = append(lat, d)
					rep.Actions[action]++
					if m.e.Action != "" {
						rep.Checked["action"]++
						if action == m.e.Action {
							rep.Agree["action"]++
						}
					}
					if m.e.DKIM != "" && m.e.Action != "reject" {
						rep.Checked["dkim"]++
						if dkimRes == m.e.DKIM {
							rep.Agree["dkim"]++
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.Elapsed = time.Since(start)
	rep.Latency = loadstat.Summarize(lat)
	if len(lat) > 0 {
		rep.PerSecond = float64(len(lat)) / rep.Elapsed.Seconds()
	}
	return rep, nil
}

// replay sends one message through the chain, as Postfix does: each
// milter sees the header changes of the ones before it.
func replay(clients []*milter.Client, m message, marker string) (action, dkimResult string, err error) {
	fields := append([][2]string(nil), m.fields...)
	action = "accept"
	for _, c := range clients {
		mods, act, err := session(c, m, fields)
		if err != nil {
			return "", "", err
		}
		switch act.Type {
		case milter.ActionRejectWithCode:
			if act.SMTPCode >= 500 {
				return "reject", "", nil
			}
			return "tempfail", "", nil
		case milter.ActionReject:
			return "reject", "", nil
		case milter.ActionTempFail:
			return "tempfail", "", nil
		case milter.ActionDiscard:
			return "discard", "", nil
		}
		for _, mod := range mods {
			switch mod.Type {
			case milter.ActionInsertHeader:
				i := min(int(mod.HeaderIndex), len(fields))
				fields = append(fields[:i], append([][2]string{{mod.HeaderName, strings.TrimPrefix(mod.HeaderValue, " ")}}, fields[i:]...)...)
			case milter.ActionAddHeader:
				fields = append(fields, [2]string{mod.HeaderName, strings.TrimPrefix(mod.HeaderValue, " ")})
			case milter.ActionChangeHeader:
				n := 0
				for j := range fields {
					if strings.EqualFold(fields[j][0], mod.HeaderName) {
						n++
						if n == int(mod.HeaderIndex) {
							if mod.HeaderValue == "" {
								fields = append(fields[:j], fields[j+1:]...)
							} else {
								fields[j][1] = strings.TrimPrefix(mod.HeaderValue, " ")
							}
							break
						}
					}
				}
			case milter.ActionQuarantine:
				action = "quarantine"
			}
		}
	}
	for _, f := range fields {
		if strings.EqualFold(f[0], marker) {
			action = "quarantine"
		}
		if dkimResult == "" && strings.EqualFold(f[0], "Authentication-Results") {
			if _, rs, err := authres.Parse(f[1]); err == nil {
				for _, r := range rs {
					if r.Method == "dkim" {
						dkimResult = r.Value
						break
					}
				}
			}
		}
	}
	return action, dkimResult, nil
}

func session(c *milter.Client, m message, fields [][2]string) ([]milter.ModifyAction, *milter.Action, error) {
	s, err := c.Session(milter.NewMacroBag())
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	lead := ""
	if s.ProtocolOption(milter.OptHeaderLeadingSpace) {
		lead = " " // Postfix keeps the space only for milters that ask
	}
	steps := []func() (*milter.Action, error){
		func() (*milter.Action, error) { return s.Conn(m.e.Helo, milter.FamilyInet, 40000, m.e.IP) },
		func() (*milter.Action, error) { return s.Helo(m.e.Helo) },
		func() (*milter.Action, error) { return s.Mail("<"+m.e.MailFrom+">", "") },
		func() (*milter.Action, error) { return s.Rcpt("<"+m.e.Rcpt+">", "") },
		func() (*milter.Action, error) { return s.DataStart() },
	}
	for _, step := range steps {
		act, err := step()
		if err != nil {
			return nil, nil, err
		}
		if act.StopProcessing() {
			return nil, act, nil
		}
	}
	for _, f := range fields {
		act, err := s.HeaderField(f[0], lead+f[1], nil)
		if err != nil {
			return nil, nil, err
		}
		if act.StopProcessing() {
			return nil, act, nil
		}
	}
	if act, err := s.HeaderEnd(); err != nil || act.StopProcessing() {
		return nil, act, err
	}
	return s.BodyReadFrom(bytes.NewReader(m.body))
}

// Print writes the report for a human.
func (r *Report) Print(w io.Writer, label string) {
	fmt.Fprintf(w, "%s: %d messages in %v: %.1f msg/s; %v; errors %d\n",
		label, r.Messages, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.Latency, r.Errors)
	fmt.Fprintf(w, "  actions: %s\n", loadstat.Counts(r.Actions))
	for _, f := range []string{"action", "dkim"} {
		if r.Checked[f] > 0 {
			fmt.Fprintf(w, "  %s agrees with the manifest: %d/%d\n", f, r.Agree[f], r.Checked[f])
		}
	}
	if r.FirstError != "" {
		fmt.Fprintf(w, "  first error: %s\n", r.FirstError)
	}
}
