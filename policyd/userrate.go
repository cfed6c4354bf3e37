package policyd

import (
	"context"
	"fmt"
	"strings"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// userRateCheck caps the messages and recipients of a logged-in user per
// window of the user's class (policyd.submission.classes), shared by
// every submission node. A refused recipient or message does not count.
type userRateCheck struct{}

func (userRateCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	p, user := ev.p, ev.q.User
	s := p.cfg.Submission
	if p.st == nil {
		return nil
	}
	class, cname := p.classOf(user)
	if class.Window <= 0 {
		return nil
	}
	storeErr := func(err error) *smtpreply.Reply {
		ev.storeFailed("rate", err)
		if p.cfg.OnStoreError == "tempfail" {
			return reply(451, "4.3.0", "Temporary local problem; please try again later", "store")
		}
		return nil
	}
	limited := func(what string, rate store.Rate, n, limit int64) *smtpreply.Reply {
		secs := p.retryIn(ctx, rate, ev.now, class.Window, limit)
		ev.note("rate", 0, fmt.Sprintf("user %s (class %s): %d %s in %v, limit %d", user, cname, n, what, class.Window, limit))
		return reply(450, "4.7.1", fmt.Sprintf("Sending limit reached for user %s: %d %s per %v; please retry in %d seconds",
			user, limit, what, class.Window, secs), "rate")
	}
	if class.Recipients > 0 {
		rcpts := store.UserRate("rcpt", user)
		n, err := p.rates.Add(ctx, rcpts, ev.now, class.Window, 1)
		if err != nil {
			return storeErr(err)
		}
		if n > class.Recipients {
			p.rates.Add(ctx, rcpts, ev.now, class.Window, -1) //nolint:errcheck // refused: not sent
			return limited("recipients", rcpts, n, class.Recipients)
		}
	}
	if class.Messages > 0 || s.Bulk.VolumeMessages > 0 {
		first, err := p.txns.First(ctx, ev.q.Instance)
		if err != nil {
			return storeErr(err)
		}
		if first {
			msgs := store.UserRate("msg", user)
			n, err := p.rates.Add(ctx, msgs, ev.now, class.Window, 1)
			if err != nil {
				return storeErr(err)
			}
			if class.Messages > 0 && n > class.Messages {
				p.rates.Add(ctx, msgs, ev.now, class.Window, -1) //nolint:errcheck
				p.txns.Forget(ctx, ev.q.Instance)                //nolint:errcheck
				return limited("messages", msgs, n, class.Messages)
			}
			if s.Bulk.VolumeMessages > 0 {
				p.rates.Add(ctx, store.UserVolume(user), ev.now, s.Bulk.VolumeWindow, 1) //nolint:errcheck
			}
		}
	}
	return nil
}

func (p *Pipeline) classOf(user string) (RateClass, string) {
	s := p.cfg.Submission
	name := s.UserClasses[strings.ToLower(user)]
	if name == "" {
		name = "default"
	}
	return s.Classes[name], name
}
