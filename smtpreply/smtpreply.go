// Package smtpreply is the SMTP reply a decision of wehr's becomes: the
// code, the enhanced status code (RFC 3463), the text a human sender can
// act on, and the name of the check that made it, so that any reply text
// in a log or a bounce leads back to the code that wrote it.
package smtpreply

import (
	"fmt"
	"strings"
)

// Reply is an SMTP reply wehr decided on.
type Reply struct {
	Code     int    // 4xx or 5xx
	Enhanced string // e.g. "5.7.1"; its class matches Code's first digit
	Text     string // one line, for the sender's operator
	Check    string // the check that decided, e.g. "dmarc", "limits"
}

// Temporary reports whether the sender should try again (4xx).
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// String is the reply as sent: "550 5.7.1 text".
func (r Reply) String() string {
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// Valid checks that code and enhanced code agree, which Postfix insists
// on for milter replies.
func (r Reply) Valid() error {
	if r.Code < 400 || r.Code > 599 {
		return fmt.Errorf("smtpreply: code %d is not 4xx or 5xx", r.Code)
	}
	if len(r.Enhanced) < 5 || r.Enhanced[0] != byte('0'+r.Code/100) || strings.Count(r.Enhanced, ".") != 2 {
		return fmt.Errorf("smtpreply: enhanced code %q does not match %d", r.Enhanced, r.Code)
	}
	if strings.ContainsAny(r.Text, "\r\n") {
		return fmt.Errorf("smtpreply: text holds a line break")
	}
	return nil
}
