package mailauth

import (
	"context"
	"io"
)

// ARCStatus is an ARC chain validation status (RFC 8617 4.1.3).
type ARCStatus string

// The ARC results.
const (
	ARCNone ARCStatus = "none"
	ARCPass ARCStatus = "pass"
	ARCFail ARCStatus = "fail"
)

// ARCResult is what the ARC chain of a message says (RFC 8617 5.2).
type ARCResult struct {
	Result ARCStatus `json:"result"`
	// Instances is the number of ARC sets.
	Instances int `json:"instances"`
	// Sealers are the d= of the ARC-Seals, instance 1 first.
	Sealers []string `json:"sealers"`
	// OldestPass is the oldest instance whose AMS still verifies, 0
	// when every one does (RFC 8617 5.2 step 6; header.oldest-pass).
	OldestPass int    `json:"oldest_pass"`
	Error      string `json:"error,omitempty"`
	// AAR are the ARC-Authentication-Results values, instance 1 first.
	AAR []string `json:"-"`

	remoteIP string // smtp.remote-ip of the A-R result
}

// ARCVerifier validates a message's ARC chain: h is its header, body
// reads its body. Package arc is one; the engine is handed it.
type ARCVerifier interface {
	VerifyARC(ctx context.Context, res Resolver, h Header, body io.Reader) ARCResult
}
