package policyd

import (
	"context"
	"time"

	"github.com/wehr/wehr/sendermap"
)

// RateClass caps what a user of the class may send per window (0: no
// cap).
type RateClass struct {
	Messages   int64         `yaml:"messages"`
	Recipients int64         `yaml:"recipients"`
	Window     time.Duration `yaml:"window"`
}

// Bulk says which outbound messages go to the bulk instance.
type Bulk struct {
	// Filter is what Postfix gets for a bulk message: "FILTER " + this,
	// e.g. "smtp:[127.0.0.1]:2525". Empty: no bulk routing.
	Filter string `yaml:"filter"`
	// MinRecipients makes a message with this many recipients bulk.
	MinRecipients int64 `yaml:"min_recipients"`
	// Senders are SASL users or sender addresses whose mail is always bulk.
	Senders []string `yaml:"senders"`
	// VolumeMessages makes a user bulk after this many messages in
	// VolumeWindow (0: off).
	VolumeMessages int64         `yaml:"volume_messages"`
	VolumeWindow   time.Duration `yaml:"volume_window"`
}

// Submission configures the checks of authenticated submission.
type Submission struct {
	// SenderLogin holds a user to the MAIL FROM addresses the sender map
	// (Senders) allows.
	SenderLogin bool `yaml:"sender_login"`
	// Classes are the rate classes by name; "default" applies to users
	// without a class in UserClasses.
	Classes     map[string]RateClass `yaml:"classes"`
	UserClasses map[string]string    `yaml:"user_classes"`
	Bulk        Bulk                 `yaml:"bulk"`
	// Senders is the sender map (dkim.sender_map; nil: none).
	Senders *sendermap.Holder `yaml:"-"`
}

// The submission checks, in order, for logged-in users; at the end of
// the message, bulk routing.
var (
	submissionChecks = []check{senderLoginCheck{}, userRateCheck{}}
	endOfDataChecks  = []check{bulkCheck{}}
)

// submission evaluates a request of the submission context.
func (p *Pipeline) submission(ctx context.Context, ev *evaluation) Decision {
	if ev.q.State == "END-OF-MESSAGE" {
		return ev.decision(ev.run(ctx, endOfDataChecks))
	}
	if ev.q.User == "" {
		ev.note("context", 0, "submission without SASL login: nothing to check")
		return ev.decision(nil)
	}
	return ev.decision(ev.run(ctx, submissionChecks))
}
