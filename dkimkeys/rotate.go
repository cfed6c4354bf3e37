package dkimkeys

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NextSelectors returns the selectors for a new key generation of domain:
// "<year><letter>-rsa" and "<year><letter>-ed", with the first letter
// not used yet this year (2026a, 2026b, ...).
func (s *Store) NextSelectors(domain string, now time.Time) (rsaSel, edSel string, err error) {
	year := now.UTC().Format("2006")
	for c := 'a'; c <= 'z'; c++ {
		base := year + string(c)
		used := false
		for _, suffix := range []string{"", "-rsa", "-ed"} {
			if _, err := os.Stat(filepath.Join(s.Dir, strings.ToLower(domain), base+suffix+".pem")); err == nil {
				used = true
			}
		}
		if !used {
			return base + "-rsa", base + "-ed", nil
		}
	}
	return "", "", fmt.Errorf("dkimkeys: %s: 26 key generations this year already", domain)
}

// Rotate starts a rotation: new keys (of the algorithms the domain signs
// with now, or the given ones) in state pending. The current keys keep
// signing until Advance sees the new records in DNS.
func (s *Store) Rotate(domain string, algorithms []string, now time.Time) ([]*Key, error) {
	domain = strings.ToLower(domain)
	set, err := s.Load()
	if err != nil {
		if berr := set.Broken()[domain]; berr != nil || set.all != nil {
			return nil, err
		}
	}
	for _, k := range set.Keys(domain) {
		if k.State == Pending {
			return nil, fmt.Errorf("dkimkeys: %s has a rotation in progress (%s is pending its DNS record); publish it first", domain, k.Selector)
		}
	}
	if len(algorithms) == 0 {
		seen := map[string]bool{}
		for _, k := range set.Keys(domain) {
			if k.State == Active && !seen[k.Algorithm] {
				seen[k.Algorithm] = true
				algorithms = append(algorithms, k.Algorithm)
			}
		}
		if len(algorithms) == 0 {
			algorithms = []string{RSA, Ed25519}
		}
	}
	rsaSel, edSel, err := s.NextSelectors(domain, now)
	if err != nil {
		return nil, err
	}
	var out []*Key
	for _, a := range algorithms {
		sel := rsaSel
		if a == Ed25519 {
			sel = edSel
		}
		k, err := s.Generate(domain, sel, a, Pending, now)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// TXTResolver looks up TXT records (resolver.Resolver is one).
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Transition is one state change Advance made.
type Transition struct {
	Domain, Selector string
	From, To         string
	Why              string
}

// Advance moves rotations on, for every domain: a pending key whose
// record DNS now serves becomes active, and the active keys of its
// algorithm become retiring; a retiring key becomes retired after the
// overlap. It changes the state files and reports what it did; a DNS
// failure leaves a pending key pending.
func (s *Store) Advance(ctx context.Context, res TXTResolver, overlap time.Duration, now time.Time) ([]Transition, error) {
	// Broken domains are skipped (and reported); the others advance.
	set, loadErr := s.Load()
	if set.all != nil {
		return nil, loadErr
	}
	var out []Transition
	for _, domain := range set.Domains() {
		st, err := s.readState(domain)
		if err != nil {
			return out, err
		}
		changed := false
		move := func(k *Key, to, why string) {
			st.Selectors[k.Selector] = selectorState{State: to, Since: now.UTC()}
			out = append(out, Transition{Domain: domain, Selector: k.Selector, From: k.State, To: to, Why: why})
			k.State, k.Since = to, now.UTC()
			changed = true
		}
		keys := set.Keys(domain)
		for _, k := range keys {
			if k.State != Pending {
				continue
			}
			ok, why := Published(ctx, res, k)
			if !ok {
				continue
			}
			for _, old := range keys {
				if old.State == Active && old.Algorithm == k.Algorithm {
					move(old, Retiring, "replaced by "+k.Selector)
				}
			}
			move(k, Active, why)
		}
		for _, k := range keys {
			if k.State == Retiring && !k.Since.IsZero() && now.Sub(k.Since) >= overlap {
				move(k, Retired, fmt.Sprintf("retiring for %v; its DNS record can be removed", overlap))
			}
		}
		if changed {
			if err := s.writeState(domain, st); err != nil {
				return out, err
			}
		}
	}
	return out, loadErr
}

// Published reports whether DNS serves k's record at its name.
func Published(ctx context.Context, res TXTResolver, k *Key) (bool, string) {
	txts, err := res.LookupTXT(ctx, k.RecordName())
	if err != nil {
		if de, ok := err.(*net.DNSError); ok && de.IsNotFound {
			return false, "no record at " + k.RecordName()
		}
		return false, "lookup " + k.RecordName() + ": " + err.Error()
	}
	for _, t := range txts {
		if k.Matches(t) {
			return true, "record published at " + k.RecordName()
		}
	}
	return false, "the record at " + k.RecordName() + " holds another key"
}

// Advice says what to do about k's DNS record, given whether it is
// published: "" when nothing. wehr dkim status and wehr doctor show it.
func (k *Key) Advice(published bool) string {
	switch {
	case !published && (k.State == Active || k.State == Pending):
		return "publish: " + k.RecordName() + " TXT " + k.Record()
	case published && k.State == Retired:
		return "retired: the record at " + k.RecordName() + " can be removed"
	}
	return ""
}
