package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/listener"
)

// Server answers Postfix's policy requests on one listener: many
// connections at once, many requests per connection.
type Server struct {
	p    atomic.Pointer[Pipeline]
	log  *slog.Logger
	idle time.Duration
	// MaxConnections caps the connections served at once (default
	// 500); set before Serve.
	MaxConnections int

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool // shutting down: answer what is being asked, read no more
	wg      sync.WaitGroup
}

// NewServer makes a server; idle is how long a connection may sit between
// requests (above Postfix's smtpd_policy_service_max_idle, 300s, so that
// Postfix is the one to close idle connections).
func NewServer(p *Pipeline, log *slog.Logger, idle time.Duration) *Server {
	if idle <= 0 {
		idle = 330 * time.Second
	}
	s := &Server{log: log, idle: idle, conns: map[net.Conn]struct{}{}}
	s.p.Store(p)
	return s
}

// SetPipeline replaces the pipeline (a configuration reload); requests in
// progress finish with the old one.
func (s *Server) SetPipeline(p *Pipeline) { s.p.Store(p) }

// Pipeline is the current pipeline.
func (s *Server) Pipeline() *Pipeline { return s.p.Load() }

// Serve accepts connections until ctx ends. Then it stops accepting,
// answers the requests being evaluated (Postfix would otherwise see a
// broken connection and fall back to default_action), ends every
// connection as it waits for its next request, and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	maxConns := s.MaxConnections
	if maxConns <= 0 {
		maxConns = 500
	}
	// Out of file descriptors, a local user opening connections by the
	// hundred: wait and retry, never return (listener.Limit).
	ln = listener.Limit(ln, maxConns, "policyd", s.log)
	go func() {
		<-ctx.Done()
		ln.Close()
		s.mu.Lock()
		s.closing = true
		for c := range s.conns {
			c.SetReadDeadline(time.Now()) //nolint:errcheck
		}
		s.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.wg.Wait()
				return nil
			}
			s.wg.Wait()
			return fmt.Errorf("policyd: accept: %w", err)
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.handle(ctx, c)
		}()
	}
}

// armIdle gives c the idle deadline for its next request, unless the
// server is shutting down (false), which ends reading at once. Under
// s.mu, so that a shutdown cannot slip between the check and the
// deadline.
func (s *Server) armIdle(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closing {
		c.SetReadDeadline(time.Now().Add(s.idle)) //nolint:errcheck
	}
	return !s.closing
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// handle serves one connection until the client closes it or sends
// something we cannot read.
func (s *Server) handle(ctx context.Context, c net.Conn) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("policyd: panic; connection closed", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	br := bufio.NewReaderSize(c, 4096)
	// A request under way is finished even when the server shuts down;
	// the pipeline's own deadline bounds it.
	ctx = context.WithoutCancel(ctx)
	for {
		if !s.armIdle(c) {
			return
		}
		req, err := ReadRequest(br)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				// Postfix closes idle connections: normal.
			case s.shuttingDown():
				// Shutdown ended the wait for the next request.
			case errors.As(err, &ne) && ne.Timeout():
				s.log.Info("policyd: idle connection closed", "remote", c.RemoteAddr().String(), "idle", s.idle)
			default:
				s.log.Warn("policyd: bad request; connection closed", "remote", c.RemoteAddr().String(), "error", err)
			}
			return
		}
		start := time.Now()
		p := s.p.Load()
		d := p.Evaluate(ctx, req)
		took := time.Since(start)
		// Counted before the answer goes out, so whoever reads the
		// metrics after an answer sees it.
		if o := p.cfg.Observer; o != nil {
			o.Decision(d.Context, d.Action, d.Check, took)
		}
		c.SetWriteDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		if err := WriteAction(c, d.Action); err != nil {
			s.log.Warn("policyd: writing the answer failed", "error", err)
			return
		}
		s.logDecision(req, d, took)
	}
}

func (s *Server) logDecision(req Request, d Decision, took time.Duration) {
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	var notes strings.Builder
	notes.Grow(256)
	for i, c := range d.Contributions {
		if i > 0 {
			notes.WriteString("; ")
		}
		notes.WriteString(c.Check)
		if c.Score != 0 {
			if c.Score > 0 {
				notes.WriteByte('+')
			}
			notes.WriteString(strconv.FormatFloat(c.Score, 'g', -1, 64))
		}
		if c.Note != "" {
			notes.WriteString(": ")
			notes.WriteString(c.Note)
		}
	}
	attrs := make([]slog.Attr, 0, 14)
	if qid := req.Get("queue_id"); qid != "" {
		attrs = append(attrs, slog.String("queue_id", qid))
	}
	attrs = append(attrs, slog.String("instance", req.Get("instance")), slog.String("client", req.Get("client_address")),
		slog.String("helo", req.Get("helo_name")), slog.String("sender", req.Get("sender")), slog.String("recipient", req.Get("recipient")),
		slog.String("context", d.Context), slog.String("action", d.Action), slog.String("check", d.Check), slog.Float64("score", d.Score),
		slog.String("checks", notes.String()), slog.Int64("duration_ms", took.Milliseconds()))
	verb, _, _ := strings.Cut(d.Action, " ")
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "policyd: "+verb, attrs...)
}
