package mtasts

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wehr/wehr/listener"
)

// PolicyServer serves the policy files of the configured domains over
// HTTPS (RFC 8461 3.2), at https://mta-sts.DOMAIN/.well-known/mta-sts.txt,
// each with its own certificate, chosen by the name the sender asks for
// (SNI).
type PolicyServer struct {
	files map[string]string // mta-sts.DOMAIN → policy file
	certs map[string]*tls.Certificate
	log   *slog.Logger
}

// NewPolicyServer loads the policies and certificates of c.
func NewPolicyServer(c ServeConfig, log *slog.Logger) (*PolicyServer, error) {
	s := &PolicyServer{files: map[string]string{}, certs: map[string]*tls.Certificate{}, log: log}
	for _, p := range c.Policies {
		pol, err := p.Policy()
		if err != nil {
			return nil, fmt.Errorf("mtasts: serve %s: %w", p.Domain, err)
		}
		cert, err := p.certificate()
		if err != nil {
			return nil, fmt.Errorf("mtasts: serve %s: %w", p.Domain, err)
		}
		host := "mta-sts." + strings.ToLower(strings.TrimSuffix(p.Domain, "."))
		s.files[host], _ = Publish(pol)
		s.certs[host] = &cert
	}
	return s, nil
}

// Serve serves HTTPS on ln until ctx ends.
func (s *PolicyServer) Serve(ctx context.Context, ln net.Listener) error {
	err := listener.ServeHTTP(ctx, ln, s, listener.HTTP{WriteTimeout: 10 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0), // handshakes of scanners
		TLS: &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c, ok := s.certs[strings.ToLower(hi.ServerName)]; ok {
				return c, nil
			}
			return nil, fmt.Errorf("no policy for %q", hi.ServerName)
		}}})
	if err != nil {
		return fmt.Errorf("mtasts: serving policies: %w", err)
	}
	return nil
}

// ServeHTTP answers one request for a policy file.
func (s *PolicyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	file, ok := s.files[host]
	if !ok || r.URL.Path != "/.well-known/mta-sts.txt" || r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, file) //nolint:errcheck
	s.log.Info("mtasts: policy served", "host", host, "remote", r.RemoteAddr)
}
