package policyd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// RateClass caps what a user of the class may send per window (0: no
// cap).
type RateClass struct {
	Messages, Recipients int64
	Window               time.Duration
}

// Bulk says which outbound messages go to the bulk instance.
type Bulk struct {
	// Filter is what Postfix gets for a bulk message: "FILTER " + this,
	// e.g. "smtp:[127.0.0.1]:2525". Empty: no bulk routing.
	Filter string
	// MinRecipients makes a message with this many recipients bulk.
	MinRecipients int64
	// Senders are SASL users or sender addresses whose mail is always bulk.
	Senders []string
	// VolumeMessages makes a user bulk after this many messages in
	// VolumeWindow (0: off).
	VolumeMessages int64
	VolumeWindow   time.Duration
}

// Submission configures the checks of authenticated submission.
type Submission struct {
	// Senders is the sender map: a user may only use the MAIL FROM
	// addresses it allows (nil: no sender login check).
	Senders *sendermap.Holder
	// Classes are the rate classes by name; "default" applies to users
	// without a class.
	Classes   map[string]RateClass
	UserClass map[string]string
	Bulk      Bulk
}

// submission evaluates a request of the submission context.
func (p *Pipeline) submission(ctx context.Context, req Request, now time.Time) Decision {
	d := Decision{Context: "submission", Action: "DUNNO", Contributions: []Contribution{}}
	s := p.cfg.Submission
	user := req.Get("sasl_username")
	sender := strings.ToLower(req.Get("sender"))
	note := func(check, n string) { d.Contributions = append(d.Contributions, Contribution{Check: check, Note: n}) }

	if req.Get("protocol_state") == "END-OF-MESSAGE" {
		if s.Bulk.Filter == "" {
			return d
		}
		if why := p.bulk(ctx, req, user, sender, now); why != "" {
			d.Action, d.Check = "FILTER "+s.Bulk.Filter, "bulk"
			note("bulk", why)
		}
		return d
	}
	if user == "" {
		note("context", "submission without SASL login: nothing to check")
		return d
	}
	// Sender login (RFC 4954 says nothing of it; Postfix's
	// reject_sender_login_mismatch is the model): the map of the signer.
	if s.Senders != nil && sender != "" {
		if ok, why := s.Senders.Map().Allowed(user, nil, sender); !ok {
			note("sender_login", why)
			d.set(&smtpreply.Reply{Code: 553, Enhanced: "5.7.1", Check: "sender_login",
				Text: fmt.Sprintf("Sender address <%s> is not owned by user %s", sender, user)})
			return d
		}
		note("sender_login", "ok")
	}
	// Rates per user, shared by every submission node.
	if p.st == nil {
		return d
	}
	class, cname := p.classOf(user)
	if class.Window <= 0 {
		return d
	}
	storeErr := func(err error) Decision {
		p.storeError()
		p.log.Warn("policyd: store unavailable; submission rate not checked", "user", user, "error", err)
		note("rate", "store unavailable: "+err.Error())
		if p.cfg.TempfailOnStoreError {
			d.set(reply(451, "4.3.0", "Temporary local problem; please try again later", "store"))
		}
		return d
	}
	limited := func(what string, rate store.Rate, n, limit int64) Decision {
		secs := p.retryIn(ctx, rate, now, class.Window, limit)
		note("rate", fmt.Sprintf("user %s (class %s): %d %s in %v, limit %d", user, cname, n, what, class.Window, limit))
		d.set(reply(450, "4.7.1", fmt.Sprintf("Sending limit reached for user %s: %d %s per %v; please retry in %d seconds",
			user, limit, what, class.Window, secs), "rate"))
		return d
	}
	if class.Recipients > 0 {
		rcpts := store.UserRate("rcpt", user)
		n, err := p.rates.Add(ctx, rcpts, now, class.Window, 1)
		if err != nil {
			return storeErr(err)
		}
		if n > class.Recipients {
			p.rates.Add(ctx, rcpts, now, class.Window, -1) //nolint:errcheck // refused: not sent
			return limited("recipients", rcpts, n, class.Recipients)
		}
	}
	if class.Messages > 0 || s.Bulk.VolumeMessages > 0 {
		first, err := p.txns.First(ctx, req.Get("instance"))
		if err != nil {
			return storeErr(err)
		}
		if first {
			msgs := store.UserRate("msg", user)
			n, err := p.rates.Add(ctx, msgs, now, class.Window, 1)
			if err != nil {
				return storeErr(err)
			}
			if class.Messages > 0 && n > class.Messages {
				p.rates.Add(ctx, msgs, now, class.Window, -1) //nolint:errcheck
				p.txns.Forget(ctx, req.Get("instance"))       //nolint:errcheck
				return limited("messages", msgs, n, class.Messages)
			}
			if s.Bulk.VolumeMessages > 0 {
				p.rates.Add(ctx, store.UserVolume(user), now, s.Bulk.VolumeWindow, 1) //nolint:errcheck
			}
		}
	}
	return d
}

func (p *Pipeline) classOf(user string) (RateClass, string) {
	s := p.cfg.Submission
	name := s.UserClass[strings.ToLower(user)]
	if name == "" {
		name = "default"
	}
	return s.Classes[name], name
}

// bulk says why a message is bulk, or "".
func (p *Pipeline) bulk(ctx context.Context, req Request, user, sender string, now time.Time) string {
	b := p.cfg.Submission.Bulk
	if n, err := strconv.ParseInt(req.Get("recipient_count"), 10, 64); err == nil && b.MinRecipients > 0 && n >= b.MinRecipients {
		return fmt.Sprintf("%d recipients (bulk from %d)", n, b.MinRecipients)
	}
	for _, s := range b.Senders {
		s = strings.ToLower(s)
		if s == strings.ToLower(user) || s == sender {
			return "configured bulk sender " + s
		}
	}
	if b.VolumeMessages > 0 && user != "" && p.st != nil {
		n, err := p.rates.Add(ctx, store.UserVolume(user), now, b.VolumeWindow, 0)
		if err == nil && n >= b.VolumeMessages {
			return fmt.Sprintf("user %s sent %d messages in %v (bulk from %d)", user, n, b.VolumeWindow, b.VolumeMessages)
		}
	}
	return ""
}
