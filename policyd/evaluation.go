package policyd

import (
	"context"
	"time"

	"github.com/wehr/wehr/smtpreply"
)

// check is one step of a pipeline: it adds what it finds to the
// evaluation (a score, a note), or returns the reply that decides the
// request. Each check lives in the file named after it, with the words
// of its replies.
type check interface {
	run(ctx context.Context, ev *evaluation) *smtpreply.Reply
}

// starter is a check that looks something up: when the pipeline reaches
// the first of them, all start at once, and each run waits for its own.
type starter interface {
	start(ctx context.Context, ev *evaluation)
}

// evaluation is one request on its way through a pipeline.
type evaluation struct {
	p   *Pipeline
	q   Query
	now time.Time
	d   Decision // Context, Score and Contributions so far
	// storeDown is set when the store failed during this request: the
	// checks that need it are skipped.
	storeDown bool
	// listedOn names the blocklists that list the client, for the
	// refusal text.
	listedOn []string
	lists    chan []listing // the dnsbl check's queries
	// filter, if set, routes the message (bulk): FILTER filter.
	filter string
	iprev  iprevFuture
	state  clientState
}

// note adds a contribution.
func (ev *evaluation) note(check string, score float64, note string) {
	ev.d.Score += score
	ev.d.Contributions = append(ev.d.Contributions, Contribution{Check: check, Score: score, Note: note})
}

// store says whether checks may use the store now.
func (ev *evaluation) store() bool { return ev.p.st != nil && !ev.storeDown }

// storeFailed records that the store did not answer check: counted and
// logged once per request, noted each time.
func (ev *evaluation) storeFailed(check string, err error) {
	if !ev.storeDown {
		ev.p.storeError()
		ev.p.log.Warn("policyd: store unavailable; check skipped", "check", check, "error", err, "instance", ev.q.Instance)
	}
	ev.storeDown = true
	ev.note(check, 0, "store unavailable: "+err.Error())
}

// run runs checks in order until one decides.
func (ev *evaluation) run(ctx context.Context, checks []check) *smtpreply.Reply {
	started := false
	for i, c := range checks {
		if _, ok := c.(starter); ok && !started {
			started = true
			for _, s := range checks[i:] {
				if s, ok := s.(starter); ok {
					s.start(ctx, ev)
				}
			}
		}
		if r := c.run(ctx, ev); r != nil {
			return r
		}
	}
	return nil
}

// decision is the answer: the reply if a check decided, else DUNNO.
func (ev *evaluation) decision(r *smtpreply.Reply) Decision {
	d := ev.d
	if d.Contributions == nil {
		d.Contributions = []Contribution{}
	}
	if r != nil {
		d.set(r)
		return d
	}
	d.Action = "DUNNO"
	if ev.filter != "" {
		d.Action, d.Check = "FILTER "+ev.filter, "bulk"
		return d
	}
	if ev.storeDown {
		d.Check = "store"
	}
	return d
}

func reply(code int, enhanced, text, check string) *smtpreply.Reply {
	return &smtpreply.Reply{Code: code, Enhanced: enhanced, Text: text, Check: check}
}
