package policyd

import (
	"context"
	"fmt"
	"strings"

	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
)

// bulkCheck routes a bulk message (many recipients, a configured bulk
// sender, or a user's recent volume) to the bulk instance: Postfix gets
// FILTER policyd.submission.bulk.filter at end of data (at RCPT it only
// knows recipient_count=0).
type bulkCheck struct{}

func (bulkCheck) run(ctx context.Context, ev *evaluation) *smtpreply.Reply {
	b := ev.p.cfg.Submission.Bulk
	if b.Filter == "" {
		return nil
	}
	if why := ev.p.bulk(ctx, ev); why != "" {
		ev.filter = b.Filter
		ev.note("bulk", 0, why)
	}
	return nil
}

// bulk says why a message is bulk, or "".
func (p *Pipeline) bulk(ctx context.Context, ev *evaluation) string {
	b := p.cfg.Submission.Bulk
	q := ev.q
	if b.MinRecipients > 0 && q.RecipientCount >= b.MinRecipients {
		return fmt.Sprintf("%d recipients (bulk from %d)", q.RecipientCount, b.MinRecipients)
	}
	for _, s := range b.Senders {
		s = strings.ToLower(s)
		if s == strings.ToLower(q.User) || s == q.Sender {
			return "configured bulk sender " + s
		}
	}
	if b.VolumeMessages > 0 && q.User != "" && p.st != nil {
		n, err := p.rates.Add(ctx, store.UserVolume(q.User), ev.now, b.VolumeWindow, 0)
		if err == nil && n >= b.VolumeMessages {
			return fmt.Sprintf("user %s sent %d messages in %v (bulk from %d)", q.User, n, b.VolumeWindow, b.VolumeMessages)
		}
	}
	return ""
}
