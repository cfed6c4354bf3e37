package policyd

import (
	"context"

	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/smtpreply"
)

// senderLoginCheck holds a logged-in user to the MAIL FROM addresses the
// sender map (the signer's, dkim.sender_map) allows, as Postfix's
// reject_sender_login_mismatch does; the reply is the one the milter
// sends for a From header (sendermap.Refusal).
type senderLoginCheck struct{}

func (senderLoginCheck) run(_ context.Context, ev *evaluation) *smtpreply.Reply {
	senders := ev.p.cfg.Submission.Senders
	if !ev.p.cfg.Submission.SenderLogin || senders == nil || ev.q.Sender == "" {
		return nil
	}
	if ok, why := senders.Map().Allowed(ev.q.User, nil, ev.q.Sender); !ok {
		ev.note("sender_map", 0, why)
		r := sendermap.Refusal(ev.q.User, "", ev.q.Sender)
		return &r
	}
	ev.note("sender_map", 0, "ok")
	return nil
}
