package milterproto

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/workers"
)

// Handler is the filter of one MTA connection. The session calls its
// methods one at a time, from the connection's goroutine; strings are
// the handler's to keep, a body chunk only for the call. The steps
// before the end of the message have no answer: we take the message to
// its end and decide there.
type Handler interface {
	// Connect: the SMTP client; family is "tcp4", "tcp6", "unix" or
	// "unknown" (then port and addr are empty).
	Connect(host, family string, port uint16, addr string)
	Helo(name string)
	// MailFrom and RcptTo have their address without angle brackets.
	MailFrom(from string)
	RcptTo(rcpt string)
	Header(name, value string)
	EndOfHeaders()
	Body(chunk []byte)
	// EndOfMessage answers the message; the session's changes (Insert,
	// Change, Quarantine, Progress) may be called during it only.
	EndOfMessage() Reply
	// Abort ends the message without an answer (RSET, a client gone).
	Abort()
	// Close ends the connection.
	Close()
}

// Options is what a server negotiates and how long it waits.
type Options struct {
	// Actions are what the filter does to messages; the MTA must offer
	// them all.
	Actions Action
	// Protocol are the steps left out, the replies not waited for and
	// HeaderLeadingSpace. The MTA must offer HeaderLeadingSpace if asked;
	// a reply it does not offer to leave out is sent (continue).
	Protocol Protocol
	// Macros are the macros asked for at each stage (with the MTA's
	// consent, SetMacros).
	Macros map[Stage][]string
	// IdleTimeout ends a connection that sends nothing for that long
	// (0: 10 minutes); WriteTimeout bounds a write (0: 10 s).
	IdleTimeout  time.Duration
	WriteTimeout time.Duration
}

// ErrServerClosed is what Serve returns after Shutdown.
var ErrServerClosed = errors.New("milterproto: server closed")

// Server serves the milter protocol to MTAs.
type Server struct {
	opts       Options
	log        *slog.Logger
	newHandler func(*Session) Handler
	macroList  []byte // the macro lists of our negotiation reply
	// conns runs each connection on a goroutine whose stack has grown.
	conns *workers.Pool

	count   atomic.Uint64 // connections (and new connections after 'K') served
	closing atomic.Bool
	mu      sync.Mutex
	lns     map[net.Listener]bool
	active  map[*Session]bool
	alive   map[*Session]bool // sessions in KeepAlive

	tickOnce sync.Once
	quit     chan struct{} // closed by Shutdown
}

// NewServer makes a server; newHandler makes the handler of each
// connection (and of each new one on the same socket), and log gets a
// line for every connection ended by something other than the MTA.
func NewServer(opts Options, log *slog.Logger, newHandler func(*Session) Handler) *Server {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	s := &Server{opts: opts, log: log, newHandler: newHandler, conns: workers.New(64, time.Minute),
		lns: map[net.Listener]bool{}, active: map[*Session]bool{}, alive: map[*Session]bool{}, quit: make(chan struct{})}
	for st := StageConnect; st <= StageEOH; st++ {
		if names := opts.Macros[st]; len(names) > 0 {
			s.macroList = appendUint32(s.macroList, uint32(st))
			for i, n := range names {
				if i > 0 {
					s.macroList = append(s.macroList, ' ')
				}
				s.macroList = append(s.macroList, n...)
			}
			s.macroList = append(s.macroList, 0)
		}
	}
	return s
}

// Serve accepts connections on ln until Shutdown, and serves each on a
// goroutine of its own. Accept errors end it: a listener that should
// wait out a shortage of file descriptors must do so itself
// (listener.Limit does).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.lns[ln] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			return err
		}
		ss := newSession(s, c)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			ss.release()
			continue
		}
		s.active[ss] = true
		s.mu.Unlock()
		s.conns.Go(ss.serve)
	}
}

// Sessions is the number of MTA connections served so far.
func (s *Server) Sessions() uint64 { return s.count.Load() }

// Shutdown stops accepting, lets the connections end as the MTA ends
// them (a quit, or a new connection announced) until ctx is done, then
// closes the rest and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.closing.Swap(true) {
		defer close(s.quit)
	}
	s.mu.Lock()
	var errs []error
	for ln := range s.lns {
		errs = append(errs, ln.Close())
	}
	s.mu.Unlock()
	wait := time.Millisecond
	for {
		s.mu.Lock()
		n := len(s.active)
		s.mu.Unlock()
		if n == 0 {
			s.conns.Close()
			return errors.Join(errs...)
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for ss := range s.active {
				ss.conn.Close()
			}
			s.mu.Unlock()
			s.conns.Close()
			return ctx.Err()
		case <-time.After(wait):
			wait = min(2*wait, 500*time.Millisecond)
		}
	}
}

// done forgets a connection that ended.
func (s *Server) done(ss *Session) {
	s.mu.Lock()
	delete(s.active, ss)
	s.mu.Unlock()
}

func appendUint32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}
