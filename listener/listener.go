// Package listener parses the daemons' listen addresses, in Postfix's
// notation (inet:HOST:PORT, unix:/path) and libmilter's (inet:PORT@HOST,
// local:/path), and opens them: a unix socket gets its mode and owner, a
// stale socket file is replaced, and an address off loopback is refused
// unless allowed, since neither a milter nor a policy service has
// authentication.
package listener

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Address is a listen address: network "tcp" or "unix".
type Address struct {
	Network string
	Address string // HOST:PORT, or an absolute socket path
}

func (a Address) String() string {
	if a.Network == "unix" {
		return "unix:" + a.Address
	}
	return "inet:" + a.Address
}

// ParseAddress reads a listen address in Postfix's notation, inet:HOST:PORT
// or unix:/absolute/path, or in the libmilter (OpenDKIM) forms
// inet:PORT@HOST, inet6:PORT@HOST and local:/path. A relative socket path
// is refused (the daemon's working directory is not Postfix's), and so is
// an address off loopback unless allowRemote is set: the daemons see all
// mail and have no authentication.
func ParseAddress(s string, allowRemote bool) (Address, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Address{}, fmt.Errorf("address %q: want inet:HOST:PORT or unix:/path", s)
	}
	switch kind {
	case "unix", "local":
		if !filepath.IsAbs(rest) {
			return Address{}, fmt.Errorf("address %q: the socket path must be absolute", s)
		}
		return Address{Network: "unix", Address: filepath.Clean(rest)}, nil
	case "inet", "inet6":
		var host, port string
		if p, h, ok := strings.Cut(rest, "@"); ok {
			host, port = h, p // libmilter: inet:PORT@HOST
		} else {
			var err error
			host, port, err = net.SplitHostPort(rest)
			if err != nil {
				return Address{}, fmt.Errorf("address %q: want inet:HOST:PORT", s)
			}
		}
		host = strings.Trim(host, "[]")
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Address{}, fmt.Errorf("address %q: bad port %q", s, port)
		}
		if host == "localhost" {
			host = "127.0.0.1"
			if kind == "inet6" {
				host = "::1"
			}
		}
		ip := net.ParseIP(host)
		if ip == nil {
			return Address{}, fmt.Errorf("address %q: the host must be an IP address", s)
		}
		if !ip.IsLoopback() && !allowRemote {
			return Address{}, fmt.Errorf("address %q is not on loopback: this daemon sees all mail and has no authentication; set allow_remote: true if a firewall protects it", s)
		}
		return Address{Network: "tcp", Address: net.JoinHostPort(ip.String(), port)}, nil
	}
	return Address{}, fmt.Errorf("address %q: unknown kind %q (want inet or unix)", s, kind)
}

// SocketPerms are the mode and owner of a unix socket.
type SocketPerms struct {
	Mode  fs.FileMode // 0 means 0660
	Owner string      // user name or uid; "" keeps ours
	Group string      // group name or gid; "" keeps ours
}

// Listen opens the listener. For a unix socket, a stale socket file (no
// one listening) is removed first, and the mode and owner are set.
// Closing the listener removes the socket file (net.UnixListener does).
func Listen(a Address, perms SocketPerms) (net.Listener, error) {
	if a.Network != "unix" {
		ln, err := tcpConfig.Listen(context.Background(), "tcp", a.Address)
		if err != nil {
			return nil, fmt.Errorf("listener: listen %s: %w", a, err)
		}
		return quickAckListener{Listener: ln}, nil
	}
	if fi, err := os.Lstat(a.Address); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listener: %s exists and is not a socket; not removing it", a.Address)
		}
		if c, err := net.Dial("unix", a.Address); err == nil {
			c.Close()
			return nil, fmt.Errorf("listener: %s is in use by another process", a.Address)
		}
		if err := os.Remove(a.Address); err != nil {
			return nil, fmt.Errorf("listener: remove stale socket: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Dir(a.Address)); errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(a.Address)
		return nil, fmt.Errorf("listener: listen %s: the directory %s does not exist; create it for the user wehr runs as, e.g. install -d -o wehr -g postfix -m 0750 %s", a, dir, dir)
	}
	ln, err := net.Listen("unix", a.Address)
	if err != nil {
		return nil, fmt.Errorf("listener: listen %s: %w", a, err)
	}
	mode := perms.Mode
	if mode == 0 {
		mode = 0o660
	}
	if err := os.Chmod(a.Address, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listener: chmod %s: %w", a.Address, err)
	}
	if perms.Owner != "" || perms.Group != "" {
		uid, gid, err := lookupOwner(perms.Owner, perms.Group)
		if err == nil {
			err = os.Chown(a.Address, uid, gid)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listener: chown %s: %w", a.Address, err)
		}
	}
	return ln, nil
}

// tcpConfig turns TCP keepalive on for the listening socket, whose
// accepted connections inherit it on Linux (sk_clone copies the flag and
// the timings), instead of Go setting it with four system calls on each
// connection: for a milter, one connection a message, they were 3 % of
// its CPU. The timings are Go's defaults: probes after 15 s idle, every
// 15 s, nine of them.
var tcpConfig = net.ListenConfig{
	KeepAlive: -1,
	Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range []struct{ level, opt, v int }{
				{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
				{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
				{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
				{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
			} {
				if serr == nil {
					serr = syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v)
				}
			}
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("keepalive: %w", err)
		}
		return nil
	},
}

// lookupOwner resolves user and group names (or numbers); -1 keeps one.
func lookupOwner(owner, group string) (uid, gid int, err error) {
	uid, gid = -1, -1
	if owner != "" {
		if uid, err = strconv.Atoi(owner); err != nil {
			u, err := user.Lookup(owner)
			if err != nil {
				return 0, 0, err
			}
			uid, _ = strconv.Atoi(u.Uid)
		}
	}
	if group != "" {
		if gid, err = strconv.Atoi(group); err != nil {
			g, err := user.LookupGroup(group)
			if err != nil {
				return 0, 0, err
			}
			gid, _ = strconv.Atoi(g.Gid)
		}
	}
	return uid, gid, nil
}

// CheckOwner checks that socket owner and group names exist, for config
// validation.
func CheckOwner(owner, group string) error {
	_, _, err := lookupOwner(owner, group)
	if err != nil {
		var ue user.UnknownUserError
		var ge user.UnknownGroupError
		if errors.As(err, &ue) || errors.As(err, &ge) {
			return err
		}
		return fmt.Errorf("lookup: %w", err)
	}
	return nil
}
