// Package authpolicy is Dovecot's auth policy server (auth_policy_server_url):
// it counts failed logins per address, per /24 or /64, per login name and
// per address's distinct login names in the shared store, so that
// password guessing spread over every IMAP, POP3 and submission node is
// seen as one, and answers Dovecot's "allow" with a delay or a refusal.
// Passwords are never seen (Dovecot sends a salted hash we ignore) and
// login names are stored hashed.
package authpolicy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/store"
)

// Request is what Dovecot sends (auth_policy_request_attributes with
// its defaults, plus success on a report).
type Request struct {
	Login     string `json:"login"`
	PWHash    string `json:"pwhash"`
	Remote    string `json:"remote"`
	DeviceID  string `json:"device_id"`
	Protocol  string `json:"protocol"`
	SessionID string `json:"session_id"`
	TLS       bool   `json:"tls"`
	// Success and PolicyReject come with command=report.
	Success      *bool `json:"success"`
	PolicyReject bool  `json:"policy_reject"`
}

// Decision is the answer to command=allow: Dovecot refuses the login
// when Status < 0 (and shows Msg), delays it Status seconds when > 0.
type Decision struct {
	Status int    `json:"status"`
	Msg    string `json:"msg,omitempty"`
	// Check names what decided (ip, network, spray, login, delay,
	// allow_networks, store_down, none), Reason says why, for the log.
	Check  string `json:"-"`
	Reason string `json:"-"`
}

// Policy decides and records.
type Policy struct {
	cfg Config
	af  store.AuthFailures
	log *slog.Logger
	now func() time.Time
}

// New is the policy of cfg over st.
func New(cfg Config, st store.Store, log *slog.Logger) *Policy {
	return &Policy{cfg: cfg, af: store.NewAuthFailures(st), log: log, now: time.Now}
}

// HashLogin is the name under which a login is stored and shown.
func HashLogin(key, login string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(strings.ToLower(strings.TrimSpace(login))))
	return hex.EncodeToString(m.Sum(nil))[:24]
}

func (p *Policy) hash(login string) string {
	if login == "" {
		return ""
	}
	return HashLogin(p.cfg.LoginHashKey, login)
}

func minutes(d time.Duration) string {
	if m := int(d.Round(time.Minute) / time.Minute); m > 1 {
		return fmt.Sprintf("%d minutes", m)
	}
	return "a minute"
}

// Allow decides a login about to be (or just) authenticated. A store
// that does not answer allows, as Dovecot does when we are down.
func (p *Policy) Allow(ctx context.Context, r Request) (Decision, error) {
	a, err := netip.ParseAddr(r.Remote)
	if err != nil {
		return Decision{Check: "none", Reason: "no client address"}, nil
	}
	a = a.Unmap()
	if n, ok := setting.Contains(p.cfg.AllowNetworks, a); ok {
		return Decision{Check: "allow_networks", Reason: "client in allow_networks " + n.String()}, nil
	}
	login := p.hash(r.Login)
	now := p.now()
	for kind, id := range store.BlockIDs(a, login) {
		b, ok, err := p.af.Blocked(ctx, kind, id)
		if err != nil {
			return Decision{Check: "store_down"}, err
		}
		if !ok || !b.Until.After(now) {
			continue
		}
		if kind == "login" {
			known, err := p.af.Known(ctx, a, login)
			if err != nil {
				return Decision{Check: "store_down"}, err
			}
			if known {
				continue // the user's usual network gets in
			}
		}
		return Decision{Status: -1, Check: kind, Reason: b.Reason,
			Msg: refusal(kind, b.Until.Sub(now))}, nil
	}
	fails, err := p.af.AddressFailures(ctx, a, now, p.cfg.Window)
	if err != nil {
		return Decision{Check: "store_down"}, err
	}
	if fails >= p.cfg.DelayAfter {
		d := min(time.Duration(fails-p.cfg.DelayAfter+1)*time.Second, p.cfg.MaxDelay)
		if s := int(d / time.Second); s > 0 {
			return Decision{Status: s, Check: "delay", Reason: fmt.Sprintf("%d failed logins from %s in %v", fails, a, p.cfg.Window)}, nil
		}
	}
	return Decision{Check: "none"}, nil
}

// refusal is what the user's mail client shows.
func refusal(kind string, left time.Duration) string {
	switch kind {
	case "login":
		return "Too many failed logins for this account; try again in " + minutes(left) + " or from a network you used before"
	case "net":
		return "Too many failed logins from your network; try again in " + minutes(left)
	}
	return "Too many failed logins from your address; try again in " + minutes(left)
}

// Report records the outcome of a login: a failure counts everywhere
// and may start a block; a success takes the address's failures for
// that name back and remembers its network.
func (p *Policy) Report(ctx context.Context, r Request) (string, error) {
	a, err := netip.ParseAddr(r.Remote)
	if err != nil || r.Success == nil {
		return "ignored", nil
	}
	a = a.Unmap()
	login := p.hash(r.Login)
	if login == "" {
		login = "-"
	}
	now := p.now()
	if *r.Success {
		return "success", p.af.Success(ctx, a, login, now, p.cfg.Window, p.cfg.KnownKeep)
	}
	if r.PolicyReject {
		return "refused", nil // our own refusal: not the user's mistake
	}
	if _, ok := setting.Contains(p.cfg.AllowNetworks, a); ok {
		return "failure", nil
	}
	c, err := p.af.Failure(ctx, a, login, now, p.cfg.Window)
	if err != nil {
		return "failure", err
	}
	until := now.Add(p.cfg.BlockFor)
	block := func(kind, id, why string) error {
		p.log.Warn("authpolicy: blocking", "kind", kind, "id", id, "until", until.UTC().Format(time.RFC3339), "reason", why,
			"remote", a.String(), "login", r.Login, "protocol", r.Protocol, "session", r.SessionID)
		return p.af.Block(ctx, store.AuthBlock{Kind: kind, ID: id, Until: until, Reason: why}, now)
	}
	ids := store.BlockIDs(a, login)
	switch {
	case c.IP >= p.cfg.BlockAfter:
		err = block("ip", ids["ip"], fmt.Sprintf("%d failed logins from %s in %v", c.IP, a, p.cfg.Window))
	case c.Spray >= p.cfg.SprayAfter:
		err = block("spray", ids["spray"], fmt.Sprintf("%d login names failed from %s in %v (password spraying)", c.Spray, a, p.cfg.Window))
	case c.Net >= p.cfg.NetworkBlockAfter:
		err = block("net", ids["net"], fmt.Sprintf("%d failed logins from %s in %v", c.Net, ids["net"], p.cfg.Window))
	}
	if err == nil && c.Login >= p.cfg.LoginBlockAfter && login != "-" {
		err = block("login", login, fmt.Sprintf("%d failed logins of this name from anywhere in %v (distributed guessing)", c.Login, p.cfg.Window))
	}
	return "failure", err
}
