package integration

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// Client is the sending side of a test: the address and HELO name that
// Postfix (and the milter behind it) will see, through XCLIENT.
type Client struct {
	IP   string // "" for the real (loopback) address
	Name string // client host name; "" for [UNAVAILABLE]
	Helo string
	// AuthUser and AuthPass log in with AUTH PLAIN (submission).
	AuthUser, AuthPass string
	// XLogin, if set, is the SASL login XCLIENT claims (LOGIN=), as
	// if the client had authenticated.
	XLogin string
}

// Reply is the server's answer that ended a transaction.
type Reply struct {
	Stage string // the command it answered: CONNECT, XCLIENT, MAIL, RCPT, DATA, END
	Code  int
	Text  string
}

func (r Reply) String() string { return fmt.Sprintf("%s: %d %s", r.Stage, r.Code, r.Text) }

// OK reports whether the message was accepted.
func (r Reply) OK() bool { return r.Stage == "END" && r.Code == 250 }

// QueueID is Postfix's queue id from "250 2.0.0 Ok: queued as ID".
func (r Reply) QueueID() string {
	if i := strings.LastIndex(r.Text, "queued as "); i >= 0 {
		return strings.TrimSpace(r.Text[i+len("queued as "):])
	}
	return ""
}

// Send delivers one message to the SMTP server at addr as client c, and
// returns the reply that ended the transaction: the first failure, or the
// final answer to the message data.
func Send(addr string, c Client, from string, to []string, data string) (Reply, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(90 * time.Second)) //nolint:errcheck
	tp := textproto.NewConn(conn)
	cmd := func(stage string, want int, format string, args ...any) (Reply, bool, error) {
		if format != "" {
			if err := tp.PrintfLine(format, args...); err != nil {
				return Reply{}, false, err
			}
		}
		code, msg, err := tp.ReadResponse(want)
		if err != nil {
			if _, ok := err.(*textproto.Error); !ok {
				return Reply{}, false, err
			}
		}
		return Reply{Stage: stage, Code: code, Text: msg}, code/100 == want/100, nil
	}
	if r, ok, err := cmd("CONNECT", 220, ""); err != nil || !ok {
		return r, err
	}
	if r, ok, err := cmd("EHLO", 250, "EHLO proxy.test"); err != nil || !ok {
		return r, err
	}
	if c.IP != "" {
		name := c.Name
		if name == "" {
			name = "[UNAVAILABLE]"
		}
		// Postfix answers XCLIENT with a new greeting, and the milter
		// sees a new connection from the given address.
		login := ""
		if c.XLogin != "" {
			login = " LOGIN=" + c.XLogin
		}
		if r, ok, err := cmd("XCLIENT", 220, "XCLIENT ADDR=%s NAME=%s HELO=%s%s", c.IP, name, c.Helo, login); err != nil || !ok {
			return r, err
		}
	}
	// An EHLO after XCLIENT sets the HELO name for the milter too.
	if r, ok, err := cmd("EHLO", 250, "EHLO %s", c.Helo); err != nil || !ok {
		return r, err
	}
	if c.AuthUser != "" {
		cred := base64.StdEncoding.EncodeToString([]byte("\x00" + c.AuthUser + "\x00" + c.AuthPass))
		if r, ok, err := cmd("AUTH", 235, "AUTH PLAIN %s", cred); err != nil || !ok {
			return r, err
		}
	}
	if r, ok, err := cmd("MAIL", 250, "MAIL FROM:<%s>", from); err != nil || !ok {
		return r, err
	}
	for _, rcpt := range to {
		if r, ok, err := cmd("RCPT", 250, "RCPT TO:<%s>", rcpt); err != nil || !ok {
			return r, err
		}
	}
	if r, ok, err := cmd("DATA", 354, "DATA"); err != nil || !ok {
		return r, err
	}
	w := tp.DotWriter()
	if _, err := w.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(data, "\r\n", "\n"), "\n", "\r\n"))); err != nil {
		return Reply{}, err
	}
	if err := w.Close(); err != nil {
		return Reply{}, err
	}
	r, _, err := cmd("END", 250, "")
	tp.PrintfLine("QUIT") //nolint:errcheck
	return r, err
}
