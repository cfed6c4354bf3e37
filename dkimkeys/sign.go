package dkimkeys

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/wehr/wehr/mailauth"
)

// oversigned are signed once more than they occur, so that a copy added
// on the way (a second From, say) breaks the signature.
var oversigned = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To",
	"References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}

// listHeaders are signed only as often as they occur: a list adds List-Id
// and the like to every post, and oversigning them would break them all.
var listHeaders = []string{"List-Id", "List-Post", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Help",
	"List-Subscribe", "List-Owner", "List-Archive"}

// HeaderKeys returns the h= list for a message with the given header
// field names.
func HeaderKeys(names []string) []string {
	count := map[string]int{}
	for _, n := range names {
		count[strings.ToLower(n)]++
	}
	var keys []string
	for _, h := range oversigned {
		for range count[strings.ToLower(h)] + 1 {
			keys = append(keys, h)
		}
	}
	for _, h := range listHeaders {
		for range count[strings.ToLower(h)] {
			keys = append(keys, h)
		}
	}
	return keys
}

// Sign signs the message with each key as d=domain, relaxed/relaxed, and
// returns the DKIM-Signature field values (without the name, starting
// with a space, folded with CRLF), in the order of keys. A header
// section over maxHeader bytes (0: no cap) is an error wrapping
// mailauth.ErrHeaderTooLarge; the body is hashed once for every key, and
// the work stops when ctx ends.
func Sign(ctx context.Context, msg io.ReadSeeker, domain string, keys []*Key, maxHeader int) ([]string, error) {
	if _, err := msg.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	br := bufio.NewReader(msg)
	h, err := mailauth.ReadHeader(br, maxHeader)
	if err != nil {
		return nil, fmt.Errorf("dkim sign: %w", err)
	}
	var names []string
	for _, f := range h.Fields {
		names = append(names, f.Name)
	}
	if h.Get("From") == "" && !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, "From") }) {
		return nil, fmt.Errorf("dkim sign: the message has no From header field (RFC 6376 5.4 requires it signed)")
	}
	bh, err := mailauth.DKIMBodyHash(ctx, br)
	if err != nil {
		return nil, fmt.Errorf("dkim sign: body: %w", err)
	}
	hk := HeaderKeys(names)
	now := time.Now()
	var out []string
	for _, k := range keys {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dkim sign: %w", err)
		}
		v, err := mailauth.SignDKIM(h, domain, k.Selector, k.Signer, hk, bh, now)
		if err != nil {
			return nil, fmt.Errorf("dkim sign %s: %w", k.Selector, err)
		}
		out = append(out, v)
	}
	return out, nil
}
