package authpolicy

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/listener"
)

// Observer counts decisions; *metrics.Metrics is one.
type Observer interface {
	AuthPolicy(command, outcome string, d time.Duration)
}

// Server serves Dovecot's auth policy requests.
type Server struct {
	policy atomic.Pointer[Policy]
	log    *slog.Logger
	obs    Observer
}

// NewServer serves p.
func NewServer(p *Policy, log *slog.Logger, obs Observer) *Server {
	s := &Server{log: log, obs: obs}
	s.policy.Store(p)
	return s
}

// SetPolicy replaces the policy (a reload).
func (s *Server) SetPolicy(p *Policy) { s.policy.Store(p) }

func (s *Server) observe(command, outcome string, start time.Time) {
	if s.obs != nil {
		s.obs.AuthPolicy(command, outcome, time.Since(start))
	}
}

// ServeHTTP answers POST /?command=allow|report.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p := s.policy.Load()
	cfg := p.cfg
	command := r.URL.Query().Get("command")
	fail := func(code int, why string) {
		s.log.Warn("authpolicy: bad request", "remote_addr", r.RemoteAddr, "command", command, "status", code, "error", why)
		s.observe(command, "bad_request", start)
		http.Error(w, why, code)
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "POST only")
		return
	}
	if cfg.APIKey != "" && !authorized(r, cfg.APIKey) {
		fail(http.StatusUnauthorized, "missing or wrong API key (auth_policy_server_api_header)")
		return
	}
	if command != "allow" && command != "report" {
		fail(http.StatusBadRequest, fmt.Sprintf("command %q: want allow or report", command))
		return
	}
	var req Request
	body := http.MaxBytesReader(w, r.Body, cfg.MaxBody)
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", cfg.MaxBody))
			return
		}
		fail(http.StatusBadRequest, "body is not a JSON object: "+err.Error())
		return
	}
	if req.Remote == "" {
		fail(http.StatusBadRequest, "no remote in the request (auth_policy_request_attributes must send remote=%{rip})")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	log := s.log.With("command", command, "remote", req.Remote, "login", req.Login, "protocol", req.Protocol, "session", req.SessionID)
	w.Header().Set("Content-Type", "application/json")
	if command == "report" {
		outcome, err := p.Report(ctx, req)
		if err != nil {
			log.Error("authpolicy: the store did not take the report; not counted", "outcome", outcome, "error", err)
			outcome = "store_down"
		} else {
			log.Debug("authpolicy: report", "outcome", outcome)
		}
		s.observe(command, outcome, start)
		io.WriteString(w, `{"status":0}`)
		return
	}
	d, err := p.Allow(ctx, req)
	if err != nil {
		log.Error("authpolicy: the store does not answer; allowing", "error", err)
		d = Decision{Check: "store_down"}
	}
	outcome := "allow"
	switch {
	case d.Status < 0:
		outcome = "refuse"
		log.Warn("authpolicy: refused", "check", d.Check, "reason", d.Reason)
	case d.Status > 0:
		outcome = "delay"
		log.Info("authpolicy: delayed", "seconds", d.Status, "check", d.Check, "reason", d.Reason)
	default:
		log.Info("authpolicy: allowed", "check", d.Check, "reason", d.Reason)
	}
	if d.Check == "store_down" {
		outcome = "store_down"
	}
	s.observe(command, outcome, start)
	json.NewEncoder(w).Encode(d)
}

// authorized checks the API key: X-API-Key (Dovecot's form for a bare
// value) or the Authorization header's whole value.
func authorized(r *http.Request, key string) bool {
	for _, v := range []string{r.Header.Get("X-API-Key"), r.Header.Get("Authorization"),
		strings.TrimSpace(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))} {
		if v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(key)) == 1 {
			return true
		}
	}
	return false
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	err := listener.ServeHTTP(ctx, ln, s, listener.HTTP{CertFile: certFile, KeyFile: keyFile, WriteTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
	if err != nil {
		return fmt.Errorf("authpolicy: %w", err)
	}
	return nil
}
