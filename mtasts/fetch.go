package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"
)

// Fetcher fetches policy files over HTTPS as RFC 8461 3.3 says: from
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt, with the certificate
// checked for that name, no redirects followed, a 200 answer of type
// text/plain only, at most MaxPolicySize bytes, within Timeout.
type Fetcher struct {
	// RootCAs are the certificate authorities trusted (nil: the
	// system's).
	RootCAs *x509.CertPool
	// Timeout bounds a whole fetch (0: 10s).
	Timeout time.Duration
	// Dial, if set, makes the connections (tests point every name at
	// their server; the certificate is still checked for the name).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// IPResolver looks up a host's addresses.
type IPResolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// DialVia makes a Dial that finds the policy host through res (wehr's
// own resolver, the one every other lookup uses, not the system's) and
// tries its addresses in turn.
func DialVia(res IPResolver) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := res.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("lookup %s: %w", host, err)
		}
		var d net.Dialer
		var first error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.IP.String(), port))
			if err == nil {
				return c, nil
			}
			if first == nil {
				first = err
			}
		}
		if first == nil {
			first = fmt.Errorf("%s has no address", host)
		}
		return nil, first
	}
}

// ErrFetch is wrapped by every error of Fetch.
var ErrFetch = errors.New("mtasts: fetching the policy")

// Fetch returns domain's policy.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (Policy, error) {
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tr := &http.Transport{
		TLSClientConfig:        &tls.Config{RootCAs: f.RootCAs, MinVersion: tls.VersionTLS12},
		DialContext:            f.Dial,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 16 << 10,
		TLSHandshakeTimeout:    timeout,
		Proxy:                  nil, // RFC 8461 3.3 speaks of the domain's host, not a proxy
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // RFC 8461 3.3: redirects are not followed
	}}
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Policy{}, fmt.Errorf("%w: %s: %v", ErrFetch, url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return Policy{}, fmt.Errorf("%w: %s: %v", ErrFetch, url, describe(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		where := ""
		if loc := resp.Header.Get("Location"); loc != "" {
			where = " to " + clip(loc) + " (redirects are not followed)"
		}
		return Policy{}, fmt.Errorf("%w: %s: HTTP %s%s", ErrFetch, url, resp.Status, where)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return Policy{}, fmt.Errorf("%w: %s: served as %q, not text/plain", ErrFetch, url, clip(resp.Header.Get("Content-Type")))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return Policy{}, fmt.Errorf("%w: %s: %v", ErrFetch, url, describe(err))
	}
	if len(body) > MaxPolicySize {
		return Policy{}, fmt.Errorf("%w: %s: more than %d bytes", ErrFetch, url, MaxPolicySize)
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return Policy{}, fmt.Errorf("%s: %w", url, err)
	}
	return p, nil
}

// describe says what went wrong with the connection in an admin's
// words: the certificate problem, or the timeout.
func describe(err error) string {
	var hostErr x509.HostnameError
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &hostErr):
		return "the certificate is not valid for " + hostErr.Host + ": " + hostErr.Error()
	case errors.As(err, &unknown):
		return "the certificate is not signed by a trusted authority: " + unknown.Error()
	case errors.As(err, &invalid):
		return "the certificate is invalid: " + invalid.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	return err.Error()
}
