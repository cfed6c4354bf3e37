package store

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"time"
)

// AuthFailures owns the failed-login counts of the auth policy service
// (package authpolicy), shared by every Dovecot node:
//
//	af:ip:ADDR          failed logins from an address (window)
//	af:net:NET          ... from its Network (window)
//	af:login:HASH       failed logins of one login name, from anywhere (window)
//	af:pair:ADDR:HASH   failed logins of one name from one address (window)
//	af:spray:ADDR       distinct login names failing from an address (window)
//	ab:KIND:ID          a block (JSON), until it expires
//	ak:HASH:NET         a Network the login name logged in from (known)
//
// Login names are only ever stored hashed (HASH, made by the caller);
// passwords are never seen.
type AuthFailures struct{ st Store }

// NewAuthFailures is the failed-login state in st.
func NewAuthFailures(st Store) AuthFailures { return AuthFailures{st: st} }

// AuthCounts are the failures counted in the window.
type AuthCounts struct {
	IP, Net, Login, Pair, Spray int64
}

func addrKey(a netip.Addr) string { return a.Unmap().String() }

// Failure counts one failed login of login (hashed) from a at now.
func (f AuthFailures) Failure(ctx context.Context, a netip.Addr, login string, now time.Time, win time.Duration) (AuthCounts, error) {
	var c AuthCounts
	var err error
	if c.Pair, err = f.st.Window(ctx, "af:pair:"+addrKey(a)+":"+login, now, win, 1); err != nil {
		return c, err
	}
	first := int64(0)
	if c.Pair == 1 {
		first = 1 // a login name not seen failing from here in the window
	}
	if c.Spray, err = f.st.Window(ctx, "af:spray:"+addrKey(a), now, win, first); err != nil {
		return c, err
	}
	if c.IP, err = f.st.Window(ctx, "af:ip:"+addrKey(a), now, win, 1); err != nil {
		return c, err
	}
	if c.Net, err = f.st.Window(ctx, "af:net:"+Network(a).String(), now, win, 1); err != nil {
		return c, err
	}
	c.Login, err = f.st.Window(ctx, "af:login:"+login, now, win, 1)
	return c, err
}

// AddressFailures reads the failures counted for address a at now: the
// one count a login's delay needs (one store round trip).
func (f AuthFailures) AddressFailures(ctx context.Context, a netip.Addr, now time.Time, win time.Duration) (int64, error) {
	return f.st.Window(ctx, "af:ip:"+addrKey(a), now, win, 0)
}

// Counts reads the counts of a and login ("" for none) at now.
func (f AuthFailures) Counts(ctx context.Context, a netip.Addr, login string, now time.Time, win time.Duration) (AuthCounts, error) {
	var c AuthCounts
	var err error
	if a.IsValid() {
		if c.IP, err = f.st.Window(ctx, "af:ip:"+addrKey(a), now, win, 0); err != nil {
			return c, err
		}
		if c.Net, err = f.st.Window(ctx, "af:net:"+Network(a).String(), now, win, 0); err != nil {
			return c, err
		}
		if c.Spray, err = f.st.Window(ctx, "af:spray:"+addrKey(a), now, win, 0); err != nil {
			return c, err
		}
		if login != "" {
			if c.Pair, err = f.st.Window(ctx, "af:pair:"+addrKey(a)+":"+login, now, win, 0); err != nil {
				return c, err
			}
		}
	}
	if login != "" {
		c.Login, err = f.st.Window(ctx, "af:login:"+login, now, win, 0)
	}
	return c, err
}

// Success records a successful login of login from a: the address's
// failures for that name are taken back (a user who mistyped and then
// got it right is not a guesser), and its Network becomes known for the
// name for keep.
func (f AuthFailures) Success(ctx context.Context, a netip.Addr, login string, now time.Time, win, keep time.Duration) error {
	pair, err := f.st.Window(ctx, "af:pair:"+addrKey(a)+":"+login, now, win, 0)
	if err != nil {
		return err
	}
	if pair > 0 {
		for _, k := range []string{"af:pair:" + addrKey(a) + ":" + login, "af:ip:" + addrKey(a), "af:net:" + Network(a).String(), "af:login:" + login} {
			if _, err := f.st.Window(ctx, k, now, win, -pair); err != nil {
				return err
			}
		}
		if _, err := f.st.Window(ctx, "af:spray:"+addrKey(a), now, win, -1); err != nil {
			return err
		}
	}
	return f.st.Set(ctx, "ak:"+login+":"+Network(a).String(), []byte(now.UTC().Format(time.RFC3339)), keep)
}

// Known says whether login logged in from a's Network within its keep
// time.
func (f AuthFailures) Known(ctx context.Context, a netip.Addr, login string) (bool, error) {
	_, ok, err := f.st.Get(ctx, "ak:"+login+":"+Network(a).String())
	return ok, err
}

// KnownNetworks lists the Networks login logged in from.
func (f AuthFailures) KnownNetworks(ctx context.Context, login string) ([]string, error) {
	keys, err := f.st.Scan(ctx, "ak:"+login+":", 0)
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, "ak:"+login+":")
	}
	return keys, nil
}

// AuthBlock is a block of an address, Network, sprayer or login name.
type AuthBlock struct {
	Kind   string    `json:"kind"` // ip, net, spray, login
	ID     string    `json:"id"`
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
}

// Block blocks kind/id until b.Until.
func (f AuthFailures) Block(ctx context.Context, b AuthBlock, now time.Time) error {
	v, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return f.st.Set(ctx, "ab:"+b.Kind+":"+b.ID, v, b.Until.Sub(now))
}

// Blocked returns the block of kind/id, if there is one.
func (f AuthFailures) Blocked(ctx context.Context, kind, id string) (AuthBlock, bool, error) {
	v, ok, err := f.st.Get(ctx, "ab:"+kind+":"+id)
	if err != nil || !ok {
		return AuthBlock{}, false, err
	}
	var b AuthBlock
	if err := json.Unmarshal(v, &b); err != nil {
		return AuthBlock{}, false, nil
	}
	return b, true, nil
}

// BlockIDs are the ids an address and a login name are blocked under.
func BlockIDs(a netip.Addr, login string) map[string]string {
	ids := map[string]string{}
	if a.IsValid() {
		ids["ip"], ids["net"], ids["spray"] = addrKey(a), Network(a).String(), addrKey(a)
	}
	if login != "" {
		ids["login"] = login
	}
	return ids
}

// Reset forgets everything about an address (a valid a) or a login
// name (a non-empty login) at now: counts (taken back to zero), blocks
// and, for a name, its known Networks.
func (f AuthFailures) Reset(ctx context.Context, a netip.Addr, login string, now time.Time, win time.Duration) error {
	var windows, keys []string
	if a.IsValid() {
		windows = append(windows, "af:ip:"+addrKey(a), "af:net:"+Network(a).String(), "af:spray:"+addrKey(a))
		keys = append(keys, "ab:ip:"+addrKey(a), "ab:net:"+Network(a).String(), "ab:spray:"+addrKey(a))
	}
	if login != "" {
		windows = append(windows, "af:login:"+login)
		keys = append(keys, "ab:login:"+login)
		known, err := f.st.Scan(ctx, "ak:"+login+":", 0)
		if err != nil {
			return err
		}
		keys = append(keys, known...)
	}
	for _, w := range windows {
		n, err := f.st.Window(ctx, w, now, win, 0)
		if err != nil {
			return err
		}
		if n > 0 {
			if _, err := f.st.Window(ctx, w, now, win, -n); err != nil {
				return err
			}
		}
	}
	for _, k := range keys {
		if err := f.st.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
