package arc

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/wehr/wehr/mailauth"
)

// SealOptions say who seals and what.
type SealOptions struct {
	Domain, Selector string
	Key              crypto.Signer // RSA (RFC 8617 defines rsa-sha256 only; Ed25519 seals verify here, few elsewhere)
	// AuthservID names our Authentication-Results; Results, if set, is
	// the result list to seal (an A-R value after the authserv-id), else
	// the results of every Authentication-Results field of h with
	// AuthservID are gathered, in order.
	AuthservID, Results string
	// Headers are the fields the AMS signs (h=).
	Headers []string
	Now     time.Time
	// Chain, if set, is the validation of the chain already done (the
	// engine's), so that it is not done twice.
	Chain *mailauth.ARCResult
}

// DefaultHeaders are the fields our AMS signs when present.
var DefaultHeaders = []string{"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "List-Id", "List-Post", "List-Unsubscribe"}

// ErrChainFailed says the chain already failed (the newest seal says
// cv=fail): no set is added (RFC 8617 5.1.2).
var ErrChainFailed = errors.New("arc: the chain already failed; not sealed")

// Sealed is a new ARC set: the three field values to prepend, in this
// order from the top: Seal, AMS, AAR.
type Sealed struct {
	Instance       int
	Seal, AMS, AAR string
}

// Seal adds an ARC set to a message whose header is h and body reads
// body (RFC 8617 5.1), after validating the chain it has: cv is that
// validation's result.
func Seal(ctx context.Context, res mailauth.Resolver, h mailauth.Header, body io.ReadSeeker, o SealOptions) (Sealed, error) {
	start, err := body.Seek(0, io.SeekCurrent)
	if err != nil {
		return Sealed{}, err
	}
	var v mailauth.ARCResult
	if o.Chain != nil {
		v = *o.Chain
	} else {
		v = Verify(ctx, res, h, body)
	}
	if v.Result == mailauth.ARCFail && v.Instances > 0 {
		if sets, err := collect(h); err == nil && len(sets) > 0 {
			if t, err := parseTags(h.Fields[sets[len(sets)-1].as].Value()); err == nil && strings.EqualFold(t["cv"], "fail") {
				return Sealed{}, ErrChainFailed
			}
		}
	}
	n := v.Instances
	if n == 0 {
		// A broken chain's instances still count (RFC 8617 5.1.1.1).
		for _, f := range h.Fields {
			if strings.EqualFold(f.Name, SealName) {
				if i, err := instanceOf(f.Name, f); err == nil {
					n = max(n, i)
				}
			}
		}
	}
	i := n + 1
	if i > MaxInstances {
		return Sealed{}, fmt.Errorf("arc: the chain has %d sets already", n)
	}
	algo := ""
	switch o.Key.(type) {
	case *rsa.PrivateKey:
		algo = "rsa-sha256"
	case ed25519.PrivateKey:
		algo = "ed25519-sha256"
	default:
		return Sealed{}, fmt.Errorf("arc: key type %T", o.Key)
	}
	results := o.Results
	if results == "" {
		results = gatherResults(h, o.AuthservID)
	}
	aar := "i=" + strconv.Itoa(i) + "; " + o.AuthservID
	if results != "" {
		aar += ";\r\n\t" + results
	}
	// AMS (RFC 8617 4.1.2): relaxed/relaxed, the body as it is now.
	if _, err := body.Seek(start, io.SeekStart); err != nil {
		return Sealed{}, err
	}
	bodies := mailauth.NewBodyHashes()
	bodies.Add("relaxed", crypto.SHA256)
	if err := bodies.Read(ctx, body); err != nil {
		return Sealed{}, err
	}
	t := strconv.FormatInt(o.Now.Unix(), 10)
	amsPrefix := "a=" + algo + "; b=; bh=" + base64.StdEncoding.EncodeToString(bodies.Sum("relaxed", crypto.SHA256)) +
		"; c=relaxed/relaxed; d=" + o.Domain + "; h=" + strings.Join(o.Headers, ":") + "; i=" + strconv.Itoa(i) +
		"; s=" + o.Selector + "; t=" + t
	digest := mailauth.SignedHeaderHash(h, o.Headers, "relaxed", mailauth.Field{Name: AMSName, Raw: " " + amsPrefix}, crypto.SHA256)
	amsSig, err := sign(o.Key, digest)
	if err != nil {
		return Sealed{}, err
	}
	// The AMS's b= stays on one line: the seal signs the AMS as written
	// (relaxed canonicalization keeps a space at each fold), and this is
	// the form the ValiMail suite's reference signer sealed, whose seals
	// we then reproduce bit for bit.
	ams := strings.Replace(amsPrefix, "b=;", "b="+amsSig+";", 1)

	// AS (RFC 8617 4.1.3, 5.1.1): every set in order, ours last.
	cv := "none"
	switch {
	case v.Result == mailauth.ARCPass:
		cv = "pass"
	case v.Result == mailauth.ARCFail:
		cv = "fail"
	}
	asPrefix := "a=" + algo + "; b=; cv=" + cv + "; d=" + o.Domain + "; i=" + strconv.Itoa(i) + "; s=" + o.Selector + "; t=" + t
	withNew := mailauth.Header{Fields: append(append([]mailauth.Field(nil), h.Fields...),
		mailauth.Field{Name: AARName, Raw: " " + aar}, mailauth.Field{Name: AMSName, Raw: " " + ams}, mailauth.Field{Name: SealName, Raw: " " + asPrefix})}
	sets, err := collect(withNew)
	if err != nil {
		return Sealed{}, fmt.Errorf("arc: %w", err)
	}
	if cv == "fail" {
		// A failed chain is sealed alone: only the new set is signed.
		sets = sets[len(sets)-1:]
	}
	sh := crypto.SHA256.New()
	io.WriteString(sh, sealInput(withNew, sets))
	asSig, err := sign(o.Key, sh.Sum(nil))
	if err != nil {
		return Sealed{}, err
	}
	as := strings.Replace(asPrefix, "b=;", "b="+fold(asSig)+";", 1)
	return Sealed{Instance: i, Seal: as, AMS: ams, AAR: aar}, nil
}

func sign(key crypto.Signer, digest []byte) (string, error) {
	var b []byte
	var err error
	if _, ok := key.(ed25519.PrivateKey); ok {
		b, err = key.Sign(rand.Reader, digest, crypto.Hash(0))
	} else {
		b, err = key.Sign(rand.Reader, digest, crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("arc: sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// fold breaks a base64 value into lines of 72 (verifiers ignore folding
// inside b=, RFC 6376 3.5).
func fold(s string) string {
	var b strings.Builder
	n := 70
	for len(s) > n {
		b.WriteString(s[:n] + "\r\n ")
		s = s[n:]
		n = 72
	}
	b.WriteString(s)
	return b.String()
}

// gatherResults collects the results of every Authentication-Results
// field of h whose authserv-id is id, in order, one per line (the
// suite's "AR consolidation").
func gatherResults(h mailauth.Header, id string) string {
	var out []string
	for _, f := range h.Fields {
		if !strings.EqualFold(f.Name, "Authentication-Results") {
			continue
		}
		parts := splitResults(f.Value())
		if len(parts) == 0 || !strings.EqualFold(stripComments(parts[0]), id) {
			continue
		}
		for _, p := range parts[1:] {
			if p = strings.Join(strings.Fields(p), " "); p != "" {
				out = append(out, p)
			}
		}
	}
	return strings.Join(out, ";\r\n\t")
}

// splitResults splits an A-R value at the semicolons outside comments
// and quoted strings.
func splitResults(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '(':
			depth++
		case !quoted && c == ')' && depth > 0:
			depth--
		case !quoted && depth == 0 && c == ';':
			out = append(out, strings.TrimSpace(v[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(v[start:]))
}

// stripComments removes (comments) and surrounding white space.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		default:
			if depth == 0 {
				b.WriteByte(s[i])
			}
		}
	}
	return strings.TrimSpace(b.String())
}
