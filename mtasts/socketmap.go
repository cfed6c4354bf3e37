package mtasts

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The socketmap protocol (Postfix's socketmap_table(5)): a request is
// the netstring "NAME KEY", a reply the netstring "OK DATA", "NOTFOUND ",
// "TEMP REASON", "TIMEOUT REASON" or "PERM REASON". A connection carries
// one request after another.

// maxRequest bounds a request: a map name and a domain.
const maxRequest = 1024

// ReadNetstring reads one netstring ("LEN:DATA,") of at most max bytes.
func ReadNetstring(r *bufio.Reader, max int) (string, error) {
	// The length, digit by digit: anything else fails at once rather
	// than waiting for a ':' that never comes.
	n, digits := 0, 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		if c == ':' && digits > 0 {
			break
		}
		if c < '0' || c > '9' || digits == 7 || digits == 1 && n == 0 {
			return "", fmt.Errorf("socketmap: not a netstring (%q where a length digit or ':' belongs)", c)
		}
		n = n*10 + int(c-'0')
		digits++
	}
	if n > max {
		return "", fmt.Errorf("socketmap: request of %d bytes, more than %d", n, max)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", fmt.Errorf("socketmap: reading %d bytes: %w", n, err)
	}
	if buf[n] != ',' {
		return "", fmt.Errorf("socketmap: netstring not ended by ','")
	}
	return string(buf[:n]), nil
}

// AppendNetstring appends s as a netstring.
func AppendNetstring(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	b = append(b, ':')
	b = append(b, s...)
	return append(b, ',')
}

// EndsRequest says whether data read from Postfix ends with a whole
// request (a netstring ends with a comma): Postfix then waits for the
// answer (listener.AckUnless).
func EndsRequest(read []byte) bool { return len(read) > 0 && read[len(read)-1] == ',' }

// LookupFunc answers a socketmap request for key in the map name: the
// data and true when found; false for NOTFOUND; an error for TEMP.
type LookupFunc func(ctx context.Context, name, key string) (string, bool, error)

// SocketmapServer serves Postfix's socketmap requests.
type SocketmapServer struct {
	Lookup LookupFunc
	Log    *slog.Logger
	// Timeout bounds one lookup (0: 10s); past it the answer is TIMEOUT.
	Timeout time.Duration
	// Idle closes a connection idle this long (0: 5 minutes).
	Idle time.Duration
}

// Serve serves connections from ln until ctx ends.
func (s *SocketmapServer) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("socketmap: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *SocketmapServer) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) }) //nolint:errcheck
	defer stop()
	idle, timeout := s.Idle, s.Timeout
	if idle == 0 {
		idle = 5 * time.Minute
	}
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	br := bufio.NewReaderSize(c, 256)
	var out []byte
	for {
		c.SetReadDeadline(time.Now().Add(idle)) //nolint:errcheck
		req, err := ReadNetstring(br, maxRequest)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				s.Log.Warn("mtasts: bad socketmap request; closing the connection", "remote", c.RemoteAddr().String(), "error", err)
				c.Write(AppendNetstring(nil, "PERM "+err.Error())) //nolint:errcheck
			}
			return
		}
		name, key, ok := strings.Cut(req, " ")
		var reply string
		switch {
		case !ok || name == "" || key == "":
			reply = "PERM request is not \"NAME KEY\""
		default:
			lctx, cancel := context.WithTimeout(ctx, timeout)
			data, found, err := s.Lookup(lctx, name, key)
			timedOut := lctx.Err() != nil
			cancel()
			switch {
			case err != nil && timedOut:
				reply = "TIMEOUT " + oneLine(err.Error())
			case err != nil:
				reply = "TEMP " + oneLine(err.Error())
			case found:
				reply = "OK " + data
			default:
				reply = "NOTFOUND "
			}
		}
		out = AppendNetstring(out[:0], reply)
		c.SetWriteDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// oneLine keeps a reason short and on one line.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
	return clip(s)
}

// PostfixLookup answers Postfix's smtp_tls_policy_maps from r, for any
// map name, and logs every answer. Keys that are not domains have no
// policy. recent (nil: none) keeps answers for a while.
func PostfixLookup(r *Resolver, recent *Recent, log *slog.Logger) LookupFunc {
	return func(ctx context.Context, _, key string) (string, bool, error) {
		// Postfix also asks the parent domains (".example") and, for a
		// bracketed next hop, "[host]:port": no policy for those.
		if strings.ContainsAny(key, "[]: /") || !strings.Contains(key, ".") || strings.HasPrefix(key, ".") {
			return "", false, nil
		}
		domain := strings.ToLower(strings.TrimSuffix(key, "."))
		now := r.now()
		if answer, found, ok := recent.get(domain, now); ok {
			if log.Enabled(ctx, slog.LevelInfo) {
				log.LogAttrs(ctx, slog.LevelInfo, "mtasts: policy", slog.String("domain", domain), slog.String("how", "recent"), slog.String("answer", answer))
			}
			return answer, found, nil
		}
		res := r.Lookup(ctx, domain)
		answer, found := res.Postfix()
		recent.put(res, answer, found, now)
		if !log.Enabled(ctx, slog.LevelInfo) {
			return answer, found, nil
		}
		attrs := []slog.Attr{slog.String("domain", res.Domain), slog.String("how", res.How)}
		if res.Policy != nil {
			attrs = append(attrs, slog.String("mode", string(res.Policy.Mode)), slog.String("id", res.ID))
		}
		if res.DANE {
			attrs = append(attrs, slog.String("dane", "TLSA covers every MX host"))
		}
		if found {
			attrs = append(attrs, slog.String("answer", answer))
		}
		if res.Err != nil {
			attrs = append(attrs, slog.String("error", res.Err.Error()))
		}
		log.LogAttrs(ctx, slog.LevelInfo, "mtasts: policy", attrs...)
		return answer, found, nil
	}
}
