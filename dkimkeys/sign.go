package dkimkeys

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
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

// FieldNames reads the header field names of a message.
func FieldNames(r io.Reader) ([]string, error) {
	br := bufio.NewReader(r)
	var names []string
	for {
		line, err := br.ReadString('\n')
		t := strings.TrimRight(line, "\r\n")
		if t == "" {
			return names, nil
		}
		if t[0] != ' ' && t[0] != '\t' {
			if n, _, ok := strings.Cut(t, ":"); ok {
				names = append(names, strings.TrimSpace(n))
			}
		}
		if err != nil {
			if err == io.EOF {
				return names, nil
			}
			return nil, err
		}
	}
}

// Sign signs the message with each key as d=domain, relaxed/relaxed, and
// returns the DKIM-Signature field values (without the name, starting
// with a space, folded with CRLF), in the order of keys.
func Sign(msg io.ReadSeeker, domain string, keys []*Key) ([]string, error) {
	if _, err := msg.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	names, err := FieldNames(msg)
	if err != nil {
		return nil, fmt.Errorf("dkim sign: read header: %w", err)
	}
	hasFrom := false
	for _, n := range names {
		if strings.EqualFold(n, "From") {
			hasFrom = true
		}
	}
	if !hasFrom {
		return nil, fmt.Errorf("dkim sign: the message has no From header field (RFC 6376 5.4 requires it signed)")
	}
	hk := HeaderKeys(names)
	var out []string
	for _, k := range keys {
		if _, err := msg.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: domain, Selector: k.Selector, Signer: k.Signer,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: hk,
		})
		if err != nil {
			return nil, fmt.Errorf("dkim sign %s: %w", k.Selector, err)
		}
		if _, err := io.Copy(s, msg); err != nil {
			s.Close()
			return nil, fmt.Errorf("dkim sign %s: %w", k.Selector, err)
		}
		if err := s.Close(); err != nil {
			return nil, fmt.Errorf("dkim sign %s: %w", k.Selector, err)
		}
		sig := s.Signature()
		_, v, ok := strings.Cut(sig, ":")
		if !ok {
			return nil, fmt.Errorf("dkim sign %s: unexpected signature %q", k.Selector, sig)
		}
		out = append(out, strings.TrimSuffix(v, "\r\n"))
	}
	return out, nil
}
