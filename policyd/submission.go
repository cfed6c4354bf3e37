package policyd

import (
	"context"
	"time"

	"github.com/wehr/wehr/sendermap"
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
