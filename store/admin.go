package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// The admin socket lets ops commands use the embedded store, which only
// the wehr serve process can open: one JSON request per line, one JSON
// answer per line, on a unix socket of mode 0600.

type adminRequest struct {
	Op     string         `json:"op"`
	Key    string         `json:"key,omitempty"`
	Value  []byte         `json:"value,omitempty"`
	TTL    time.Duration  `json:"ttl,omitempty"`
	Delta  int64          `json:"delta,omitempty"`
	Now    time.Time      `json:"now,omitzero"`
	Win    time.Duration  `json:"win,omitempty"`
	Policy GreylistPolicy `json:"policy,omitzero"`
	Owner  string         `json:"owner,omitempty"`
	Lease  time.Duration  `json:"lease,omitempty"`
	Limit  int            `json:"limit,omitempty"`
	Adds   []int64        `json:"adds,omitempty"`
}

type adminResponse struct {
	Error string        `json:"error,omitempty"`
	Value []byte        `json:"value,omitempty"`
	OK    bool          `json:"ok,omitempty"`
	N     int64         `json:"n,omitempty"`
	Entry GreylistEntry `json:"entry,omitzero"`
	Keys  []string      `json:"keys,omitempty"`
	Ns    []int64       `json:"ns,omitempty"`
}

// ServeAdmin serves st on a unix socket at path until ctx ends.
func ServeAdmin(ctx context.Context, st Store, path string, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("store: admin socket: %w", err)
	}
	os.Remove(path) // a stale socket of ours; the store file lock guarantees we are the only owner
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("store: admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("store: admin socket: %w", err)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("store: admin socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			sc := bufio.NewScanner(c)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			enc := json.NewEncoder(c)
			for sc.Scan() {
				var req adminRequest
				var resp adminResponse
				if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
					resp.Error = "bad request: " + err.Error()
				} else {
					resp = serveOne(ctx, st, req)
				}
				if err := enc.Encode(resp); err != nil {
					return
				}
			}
			if err := sc.Err(); err != nil {
				log.Warn("store: admin socket: bad client", "error", err)
			}
		}()
	}
}

func serveOne(ctx context.Context, st Store, r adminRequest) (out adminResponse) {
	var err error
	switch r.Op {
	case "get":
		out.Value, out.OK, err = st.Get(ctx, r.Key)
	case "set":
		err = st.Set(ctx, r.Key, r.Value, r.TTL)
	case "delete":
		err = st.Delete(ctx, r.Key)
	case "incr":
		out.N, err = st.Incr(ctx, r.Key, r.Delta, r.TTL)
	case "counters":
		out.Ns, err = st.Counters(ctx, r.Key, r.Adds, r.TTL)
	case "window":
		out.N, err = st.Window(ctx, r.Key, r.Now, r.Win, r.Delta)
	case "greylist":
		out.Entry, err = st.Greylist(ctx, r.Key, r.Now, r.Policy)
	case "lock":
		out.N, out.OK, err = st.Lock(ctx, r.Key, r.Owner, r.Now, r.Lease)
	case "unlock":
		err = st.Unlock(ctx, r.Key, r.Owner)
	case "scan":
		out.Keys, err = st.Scan(ctx, r.Key, r.Limit)
	case "ping":
		err = st.Ping(ctx)
	default:
		err = fmt.Errorf("unknown op %q", r.Op)
	}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}

// Remote is a Store reached through the admin socket of a running wehr
// serve; one connection, one request at a time.
type Remote struct {
	mu   sync.Mutex
	path string
	c    net.Conn
	sc   *bufio.Scanner
}

// DialAdmin connects to the admin socket.
func DialAdmin(path string) (*Remote, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("store: %w: is wehr serve running? The embedded store is reached through its admin socket %s", err, path)
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	return &Remote{path: path, c: c, sc: sc}, nil
}

func (r *Remote) do(ctx context.Context, req adminRequest) (adminResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		r.c.SetDeadline(d) //nolint:errcheck
	} else {
		r.c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
	}
	b, _ := json.Marshal(req)
	if _, err := r.c.Write(append(b, '\n')); err != nil {
		return adminResponse{}, fmt.Errorf("%w: admin socket: %v", ErrUnavailable, err)
	}
	if !r.sc.Scan() {
		err := r.sc.Err()
		if err == nil {
			err = errors.New("connection closed")
		}
		return adminResponse{}, fmt.Errorf("%w: admin socket: %v", ErrUnavailable, err)
	}
	var resp adminResponse
	if err := json.Unmarshal(r.sc.Bytes(), &resp); err != nil {
		return resp, fmt.Errorf("store: admin socket: %w", err)
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Get implements Store.
func (r *Remote) Get(ctx context.Context, key string) ([]byte, bool, error) {
	resp, err := r.do(ctx, adminRequest{Op: "get", Key: key})
	return resp.Value, resp.OK, err
}

// Do implements Store, an operation at a time (the admin socket serves
// ops commands, not the mail path).
func (r *Remote) Do(ctx context.Context, ops []Op) error {
	for i := range ops {
		op := &ops[i]
		var err error
		if op.Greylist != nil {
			err = attempt(ctx, r, op)
		} else {
			op.Value, _, err = r.Get(ctx, op.Key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Set implements Store.
func (r *Remote) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	_, err := r.do(ctx, adminRequest{Op: "set", Key: key, Value: value, TTL: ttl})
	return err
}

// Delete implements Store.
func (r *Remote) Delete(ctx context.Context, key string) error {
	_, err := r.do(ctx, adminRequest{Op: "delete", Key: key})
	return err
}

// Incr implements Store.
func (r *Remote) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	resp, err := r.do(ctx, adminRequest{Op: "incr", Key: key, Delta: delta, TTL: ttl})
	return resp.N, err
}

// Counters implements Store.
func (r *Remote) Counters(ctx context.Context, key string, add []int64, ttl time.Duration) ([]int64, error) {
	resp, err := r.do(ctx, adminRequest{Op: "counters", Key: key, Adds: add, TTL: ttl})
	return resp.Ns, err
}

// Window implements Store.
func (r *Remote) Window(ctx context.Context, key string, now time.Time, win time.Duration, n int64) (int64, error) {
	resp, err := r.do(ctx, adminRequest{Op: "window", Key: key, Now: now, Win: win, Delta: n})
	return resp.N, err
}

// Greylist implements Store.
func (r *Remote) Greylist(ctx context.Context, key string, now time.Time, p GreylistPolicy) (GreylistEntry, error) {
	resp, err := r.do(ctx, adminRequest{Op: "greylist", Key: key, Now: now, Policy: p})
	return resp.Entry, err
}

// Lock implements Store.
func (r *Remote) Lock(ctx context.Context, name, owner string, now time.Time, lease time.Duration) (int64, bool, error) {
	resp, err := r.do(ctx, adminRequest{Op: "lock", Key: name, Owner: owner, Now: now, Lease: lease})
	return resp.N, resp.OK, err
}

// Unlock implements Store.
func (r *Remote) Unlock(ctx context.Context, name, owner string) error {
	_, err := r.do(ctx, adminRequest{Op: "unlock", Key: name, Owner: owner})
	return err
}

// Scan implements Store.
func (r *Remote) Scan(ctx context.Context, prefix string, limit int) ([]string, error) {
	resp, err := r.do(ctx, adminRequest{Op: "scan", Key: prefix, Limit: limit})
	return resp.Keys, err
}

// Ping implements Store.
func (r *Remote) Ping(ctx context.Context) error {
	_, err := r.do(ctx, adminRequest{Op: "ping"})
	return err
}

// Close implements Store.
func (r *Remote) Close() error { return r.c.Close() }
