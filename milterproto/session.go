package milterproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Bounds of what we read and write.
const (
	// maxPacket bounds one packet from the MTA. Postfix sends body
	// chunks of at most 64 KiB and each header field in one packet
	// (header_size_limit, 100 KiB by default); 16 MiB leaves room for
	// any sane setting. A packet is read as it arrives, never allocated
	// for the length it claims.
	maxPacket = 16 << 20
	// readBuffer is the reader's buffer: a packet that fits is parsed
	// in it, without a copy.
	readBuffer = 8 << 10
	// maxChange bounds the data of one change (libmilter's
	// MILTER_CHUNK_SIZE): the MTA refuses longer packets.
	maxChange = 64 << 10
	// maxPooled bounds the buffers kept for the next connection.
	maxPooled = 128 << 10
	// maxReplyText bounds a reply's text, within an SMTP reply line.
	maxReplyText = 450
)

// Session is one MTA connection, as its handler sees it: the macros, and
// during EndOfMessage the changes to the message.
type Session struct {
	srv  *Server
	conn net.Conn
	id   uint64
	bufs *sessionBufs
	skip int // bytes of the last packet parsed in the reader's buffer

	version  uint32
	actions  Action
	protocol Protocol
	macros   [numSlots]string // each slot: NAME NUL VALUE NUL ..., as sent
	inMsg    bool             // between MAIL and the end or abort of the message
	inEOM    bool             // in EndOfMessage: changes allowed

	// When the socket's deadlines were last set: they are set again
	// only when a sixteenth of the idle timeout, or half of the write
	// timeout, has passed (two runtime timer updates per packet were
	// 3 % of a message's CPU).
	readSet, writeSet time.Time

	// KeepAlive's schedule (under srv.mu); kaMu is held while a
	// progress packet is written, and guards kaOn.
	kaEvery         time.Duration
	kaNext, kaUntil time.Time
	kaMu            sync.Mutex
	kaOn            bool // under kaMu: progress may be written
}

// sessionBufs are a connection's buffers, kept for the next one: a
// connection carries one or a few messages.
type sessionBufs struct {
	br  *bufio.Reader
	big []byte // a packet larger than the reader's buffer
	out []byte // packets not written yet
}

var bufPool = sync.Pool{New: func() any { return &sessionBufs{} }}

func newSession(s *Server, c net.Conn) *Session {
	b := bufPool.Get().(*sessionBufs)
	if b.br == nil {
		b.br = bufio.NewReaderSize(c, readBuffer)
	} else {
		b.br.Reset(c)
	}
	return &Session{srv: s, conn: c, bufs: b}
}

// release gives the buffers back; the session's goroutine has ended.
func (ss *Session) release() {
	b := ss.bufs
	ss.bufs = nil
	b.br.Reset(nil)
	if cap(b.big) > maxPooled {
		b.big = nil
	}
	if cap(b.out) > maxPooled {
		b.out = nil
	}
	b.out = b.out[:0]
	bufPool.Put(b)
}

// ID numbers the connection (a new connection on the same socket gets
// a new number), for the log.
func (ss *Session) ID() uint64 { return ss.id }

// Macro is the value of a macro the MTA sent for this connection or
// message ("" if none), the latest stage's first; "{i}" and "i" are one
// name.
func (ss *Session) Macro(name string) string {
	name = strings.TrimSuffix(strings.TrimPrefix(name, "{"), "}")
	for slot := numSlots - 1; slot >= 0; slot-- {
		rest := ss.macros[slot]
		for rest != "" {
			var n, v string
			n, rest, _ = strings.Cut(rest, "\x00")
			v, rest, _ = strings.Cut(rest, "\x00")
			if strings.TrimSuffix(strings.TrimPrefix(n, "{"), "}") == name {
				return v
			}
		}
	}
	return ""
}

// setMacros keeps the macros sent for cmd (NAME NUL VALUE NUL ...),
// replacing those of its stage and forgetting the later stages'.
func (ss *Session) setMacros(cmd byte, pairs []byte) {
	slot := slotOf(cmd)
	ss.clearFrom(slot)
	ss.macros[slot] = string(pairs)
}

// clearFrom forgets the macros of slot and the slots after it.
func (ss *Session) clearFrom(slot int) {
	for i := slot; i < numSlots; i++ {
		ss.macros[i] = ""
	}
}

// protoError is a packet that breaks the protocol: the connection ends.
type protoError struct{ err error }

func (e protoError) Error() string { return e.err.Error() }

func broken(format string, args ...any) error {
	return protoError{fmt.Errorf(format, args...)}
}

// serve runs the connection to its end.
func (ss *Session) serve() {
	var h Handler
	defer func() {
		if r := recover(); r != nil {
			ss.srv.log.Error("milter: panic; connection closed", append(ss.who(), "panic", r, "stack", string(debug.Stack()))...)
		}
		if h != nil {
			ss.closeHandler(h)
		}
		ss.conn.Close()
		ss.srv.done(ss)
		ss.release()
	}()
	if err := ss.negotiate(); err != nil {
		ss.ended(err)
		return
	}
	h = ss.handler()
	for {
		cmd, data, err := ss.read()
		if err == nil {
			h, err = ss.step(h, cmd, data)
		}
		if err != nil {
			ss.ended(err)
			return
		}
		if h == nil {
			return
		}
	}
}

// errQuit ends a connection the MTA ends.
var errQuit = errors.New("quit")

// handler makes the handler of a new connection on the socket.
func (ss *Session) handler() Handler {
	ss.id = ss.srv.count.Add(1)
	return ss.srv.newHandler(ss)
}

// closeHandler closes h; a panic in it is logged, the socket closed.
func (ss *Session) closeHandler(h Handler) {
	defer func() {
		if r := recover(); r != nil {
			ss.srv.log.Error("milter: panic closing a session", "session", ss.id, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if ss.inMsg {
		ss.inMsg = false
		h.Abort()
	}
	h.Close()
}

// ended logs why a connection ends, unless the MTA ended it.
func (ss *Session) ended(err error) {
	pe, isProto := err.(protoError) // never wrapped (errors.As made a value escape on every connection)
	switch {
	case errors.Is(err, errQuit), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case isProto:
		ss.srv.log.Warn("milter: "+pe.Error()+": not the milter protocol, or broken; connection closed", ss.who()...)
	case errors.Is(err, os.ErrDeadlineExceeded):
		ss.srv.log.Warn("milter: the MTA sent nothing within the timeout (milter.idle_timeout), or did not read our answer; connection closed",
			append(ss.who(), "idle_timeout", ss.srv.opts.IdleTimeout.String(), "write_timeout", ss.srv.opts.WriteTimeout.String())...)
	case errors.Is(err, io.ErrUnexpectedEOF):
		ss.srv.log.Info("milter: the MTA closed the connection within a packet", ss.who()...)
	default:
		ss.srv.log.Warn("milter: connection ended", append(ss.who(), "error", err)...)
	}
}

// who names the connection in a log line: the MTA's address, and the
// session once negotiated.
func (ss *Session) who() []any {
	if ss.id == 0 {
		return []any{"remote", remote(ss.conn)}
	}
	return []any{"remote", remote(ss.conn), "session", ss.id}
}

func remote(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}

// negotiate answers the MTA's option negotiation, which must come
// first: the actions we need must all be offered, and the leading space
// of header values if we ask for it; a reply the MTA does not offer to
// leave out is sent.
func (ss *Session) negotiate() error {
	ss.conn.SetReadDeadline(time.Now().Add(min(ss.srv.opts.IdleTimeout, 10*time.Second))) //nolint:errcheck
	cmd, data, err := ss.read()
	if err != nil {
		return err
	}
	if cmd != cmdOptNeg || len(data) < 12 {
		return broken("the first packet is %q with %d bytes, not the option negotiation", cmd, len(data))
	}
	version := binary.BigEndian.Uint32(data)
	offered := Action(binary.BigEndian.Uint32(data[4:]))
	steps := Protocol(binary.BigEndian.Uint32(data[8:]))
	o := ss.srv.opts
	if version < 2 {
		return broken("milter protocol version %d", version)
	}
	if missing := o.Actions &^ offered; missing != 0 {
		return broken("the MTA does not offer the actions %#x we need (it offers %#x)", uint32(missing), uint32(offered))
	}
	if missing := o.Protocol &^ optional &^ steps; missing != 0 {
		return broken("the MTA does not offer the protocol options %#x we need (it offers %#x)", uint32(missing), uint32(steps))
	}
	ss.version = min(version, 6)
	ss.actions = o.Actions
	ss.protocol = o.Protocol & steps
	start := ss.begin(repOptNeg)
	b := ss.bufs
	b.out = appendUint32(b.out, ss.version)
	b.out = appendUint32(b.out, uint32(ss.actions))
	b.out = appendUint32(b.out, uint32(ss.protocol))
	if offered&SetMacros != 0 {
		b.out = append(b.out, ss.srv.macroList...)
	}
	ss.end(start)
	ss.readSet = time.Time{} // the idle timeout from now on
	return ss.flush()
}

// step runs one command; it returns the handler (a new one after 'K',
// nil when the connection ends).
func (ss *Session) step(h Handler, cmd byte, data []byte) (Handler, error) {
	switch cmd {
	case cmdMacro:
		if len(data) == 0 {
			return h, broken("a macro packet without its command")
		}
		ss.setMacros(data[0], data[1:])
		return h, nil
	case cmdConnect:
		host, family, port, addr, err := parseConnect(data)
		if err != nil {
			return h, err
		}
		ss.clearFrom(slotHelo)
		h.Connect(host, family, port, addr)
	case cmdHelo:
		ss.clearFrom(slotMail)
		h.Helo(cstring(data))
	case cmdMail:
		if bytes.IndexByte(data, 0) < 0 {
			return h, broken("a MAIL packet without its NUL terminator")
		}
		if ss.inMsg {
			h.Abort() // a new message without an abort (Sendmail's way)
		}
		ss.inMsg = true
		ss.clearFrom(slotRcpt)
		h.MailFrom(removeAngle(cstring(data)))
	case cmdRcpt:
		if bytes.IndexByte(data, 0) < 0 {
			return h, broken("an RCPT packet without its NUL terminator")
		}
		ss.clearFrom(slotData)
		h.RcptTo(removeAngle(cstring(data)))
	case cmdData:
		ss.clearFrom(slotEOH)
	case cmdHeader:
		// One string for the name and the value.
		i := bytes.IndexByte(data, 0)
		j := -1
		if i >= 0 {
			j = bytes.IndexByte(data[i+1:], 0)
		}
		if i <= 0 || j < 0 {
			return h, broken("a header packet without a name and two NUL terminators")
		}
		if i+1+j != len(data)-1 {
			return h, broken("a header packet with an unexpected number of strings (a NUL in the value)")
		}
		s := string(data[:i+1+j])
		h.Header(s[:i], s[i+1:])
		ss.macros[slotOther] = ""
	case cmdEOH:
		ss.clearFrom(slotEOM)
		h.EndOfHeaders()
	case cmdBody:
		h.Body(data)
		ss.macros[slotOther] = ""
	case cmdEOM:
		if len(data) > 0 {
			h.Body(data) // the last chunk may come with the end
		}
		ss.inEOM = true
		r := h.EndOfMessage()
		ss.inEOM, ss.inMsg = false, false
		ss.clearFrom(slotMail)
		ss.putReply(r)
		return h, ss.flush()
	case cmdAbort:
		if ss.inMsg {
			ss.inMsg = false
			h.Abort()
		}
		ss.clearFrom(slotMail)
		return h, nil
	case cmdUnknown:
		ss.macros[slotOther] = ""
	case cmdQuitNC:
		ss.closeHandler(h)
		ss.clearFrom(slotConnect)
		if ss.srv.closing.Load() {
			return nil, nil
		}
		return ss.handler(), nil
	case cmdQuit:
		return h, errQuit
	case cmdOptNeg:
		return h, broken("a second option negotiation")
	default:
		return h, broken("unknown command %q", cmd)
	}
	if p := noReply(cmd); p != 0 && ss.protocol&p == 0 {
		ss.put(repContinue)
		return h, ss.flush()
	}
	return h, nil
}

// parseConnect reads a connect packet: host NUL, family, and for
// "4", "6" and "L" a port and an address NUL. An address that is not
// one is refused: the handler takes a connection without an address for
// a local one.
func parseConnect(data []byte) (host, family string, port uint16, addr string, err error) {
	i := bytes.IndexByte(data, 0)
	if i < 0 || i+1 >= len(data) {
		return "", "", 0, "", broken("a connect packet without host name terminator and family")
	}
	host = string(data[:i])
	fam, rest := data[i+1], data[i+2:]
	if fam == 'U' {
		return host, "unknown", 0, "", nil
	}
	if fam != '4' && fam != '6' && fam != 'L' {
		return "", "", 0, "", broken("a connect packet with family %q", fam)
	}
	if len(rest) < 3 || bytes.IndexByte(rest[2:], 0) < 0 {
		return "", "", 0, "", broken("a connect packet without port and address")
	}
	port = binary.BigEndian.Uint16(rest)
	addr = cstring(rest[2:])
	switch fam {
	case 'L':
		return host, "unix", port, addr, nil
	case '4':
		a, perr := netip.ParseAddr(addr)
		if perr != nil || !a.Is4() {
			return "", "", 0, "", broken("a connect packet with IPv4 address %q", addr)
		}
		return host, "tcp4", port, a.String(), nil
	}
	s := strings.TrimPrefix(addr, "IPv6:")
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	a, perr := netip.ParseAddr(s)
	if perr != nil {
		return "", "", 0, "", broken("a connect packet with IPv6 address %q", addr)
	}
	return host, "tcp6", port, a.String(), nil
}

// cstring is b up to its first NUL, or all of b.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// removeAngle strips the angle brackets of an SMTP address.
func removeAngle(s string) string {
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return s[1 : len(s)-1]
	}
	return s
}

// read reads the next packet: its command, and its data, which stay
// valid until the next read.
func (ss *Session) read() (byte, []byte, error) {
	b := ss.bufs
	if ss.skip > 0 {
		b.br.Discard(ss.skip) //nolint:errcheck // bytes already in the buffer
		ss.skip = 0
	}
	if err := ss.flush(); err != nil {
		return 0, nil, err
	}
	if b.br.Buffered() < 4 {
		ss.armRead() // only before the socket is read
	}
	hdr, err := b.br.Peek(4)
	if err != nil {
		return 0, nil, midPacket(err, len(hdr))
	}
	l := int(binary.BigEndian.Uint32(hdr))
	if l == 0 || l > maxPacket {
		return 0, nil, broken("a packet of %d bytes", l)
	}
	if b.br.Buffered() < 4+l {
		ss.armRead()
	}
	if 4+l <= b.br.Size() {
		p, err := b.br.Peek(4 + l)
		if err != nil {
			return 0, nil, midPacket(err, len(p))
		}
		ss.skip = 4 + l
		return p[4], p[5:], nil
	}
	b.br.Discard(4) //nolint:errcheck // peeked
	// Grow with what arrives, not with what the length claims.
	b.big = b.big[:0]
	for left := l; left > 0; {
		k := min(left, 64<<10)
		n := len(b.big)
		b.big = slices.Grow(b.big, k)[:n+k]
		if _, err := io.ReadFull(b.br, b.big[n:]); err != nil {
			return 0, nil, midPacket(err, 1)
		}
		left -= k
	}
	return b.big[0], b.big[1:], nil
}

// midPacket is the error of a read that ended after got bytes of a
// packet: an end of file within one is unexpected.
func midPacket(err error, got int) error {
	if got > 0 && errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (ss *Session) armRead() {
	now := time.Now()
	if d := ss.srv.opts.IdleTimeout; now.Sub(ss.readSet) >= d/16 {
		ss.conn.SetReadDeadline(now.Add(d)) //nolint:errcheck // the read reports a closed socket
		ss.readSet = now
	}
}

func (ss *Session) armWrite() {
	now := time.Now()
	if d := ss.srv.opts.WriteTimeout; now.Sub(ss.writeSet) >= d/2 {
		ss.conn.SetWriteDeadline(now.Add(d)) //nolint:errcheck // the write reports a closed socket
		ss.writeSet = now
	}
}

// begin starts a packet in the output; end sets its length.
func (ss *Session) begin(cmd byte) int {
	b := ss.bufs
	start := len(b.out)
	b.out = append(b.out, 0, 0, 0, 0, cmd)
	return start
}

func (ss *Session) end(start int) {
	b := ss.bufs
	binary.BigEndian.PutUint32(b.out[start:], uint32(len(b.out)-start-4))
}

// put adds a packet without data.
func (ss *Session) put(cmd byte) {
	ss.end(ss.begin(cmd))
}

// flush writes what the output holds, in one write.
func (ss *Session) flush() error {
	b := ss.bufs
	if len(b.out) == 0 {
		return nil
	}
	ss.armWrite()
	_, err := ss.conn.Write(b.out)
	b.out = b.out[:0]
	return err
}

// Reply is the answer to a message.
type Reply struct {
	code byte
	text string // a reply code's "CODE TEXT"
}

// The answers without text; the zero Reply is Accept.
var (
	Accept   = Reply{code: repAccept}
	TempFail = Reply{code: repTempFail}
)

// ReplyCode is an SMTP reply: code 4xx or 5xx, and a text of one line,
// which the MTA passes on (it should begin with the enhanced code). A
// text too long for a reply line is cut on a character boundary; a NUL
// becomes a space, and a percent sign is doubled (Sendmail and Postfix
// read it as an escape).
func ReplyCode(code int, text string) (Reply, error) {
	if code < 400 || code > 599 {
		return Reply{}, fmt.Errorf("milterproto: reply code %d is not 4xx or 5xx", code)
	}
	if strings.ContainsAny(text, "\r\n") {
		return Reply{}, fmt.Errorf("milterproto: reply text holds a line break")
	}
	text = strings.ReplaceAll(text, "\x00", " ")
	text = strings.ReplaceAll(clip(text, maxReplyText), "%", "%%")
	return Reply{code: repReplyCode, text: fmt.Sprintf("%d %s", code, text)}, nil
}

// clip cuts s to at most n bytes, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// String is the reply as the MTA gets it, for logs and tests.
func (r Reply) String() string {
	if r.code == repReplyCode {
		return r.text
	}
	return string(r.code)
}

func (ss *Session) putReply(r Reply) {
	switch r.code {
	case 0:
		ss.put(repAccept)
	case repReplyCode:
		start := ss.begin(repReplyCode)
		b := ss.bufs
		b.out = append(append(b.out, r.text...), 0)
		ss.end(start)
	default:
		ss.put(r.code)
	}
}

// Errors of the changes.
var (
	ErrNotNow        = errors.New("milterproto: a message can be changed at its end only")
	ErrNotNegotiated = errors.New("milterproto: the action was not negotiated")
)

// InsertHeader inserts a header field at index (0: the first), as the
// MTA counts them; value is what follows the colon (with its leading
// space: HeaderLeadingSpace), continuation lines separated by LF.
func (ss *Session) InsertHeader(index int, name, value string) error {
	return ss.headerChange(repInsHeader, AddHeaders, index, name, value)
}

// ChangeHeader replaces the index-th field (from 1) named name; an
// empty value deletes it.
func (ss *Session) ChangeHeader(index int, name, value string) error {
	return ss.headerChange(repChgHeader, ChangeHeaders, index, name, value)
}

func (ss *Session) headerChange(cmd byte, need Action, index int, name, value string) error {
	if !ss.inEOM {
		return ErrNotNow
	}
	if ss.actions&need == 0 {
		return ErrNotNegotiated
	}
	if index < 0 || index > math.MaxUint32 {
		return fmt.Errorf("milterproto: header index %d", index)
	}
	if !validName(name) {
		return fmt.Errorf("milterproto: header name %q", name)
	}
	start := ss.begin(cmd)
	b := ss.bufs
	b.out = appendUint32(b.out, uint32(index))
	b.out = append(append(b.out, name...), 0)
	b.out = append(appendValue(b.out, value), 0)
	if len(b.out)-start-5 > maxChange {
		b.out = b.out[:start]
		return fmt.Errorf("milterproto: header %s of %d bytes", name, len(value))
	}
	ss.end(start)
	return nil
}

// validName: a field name is printable ASCII without a colon (RFC 5322
// 2.2).
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// appendValue adds a header value as the MTA wants it: lines separated
// by LF, a NUL as a space. A line break never starts a field of its
// own: one not followed by a space or tab gets a tab (a value can add
// lines to its field, never fields to the header), and trailing ones
// go.
func appendValue(out []byte, v string) []byte {
	v = strings.TrimRight(v, "\r\n")
	if !strings.ContainsAny(v, "\r\n\x00") {
		return append(out, v...)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case 0:
			out = append(out, ' ')
		case '\r', '\n':
			if c == '\r' && i+1 < len(v) && v[i+1] == '\n' {
				i++
			}
			out = append(out, '\n')
			if i+1 < len(v) && v[i+1] != ' ' && v[i+1] != '\t' {
				out = append(out, '\t')
			}
		default:
			out = append(out, c)
		}
	}
	return out
}

// Quarantine holds the message in the MTA's quarantine (Postfix: the
// hold queue) with reason.
func (ss *Session) Quarantine(reason string) error {
	if !ss.inEOM {
		return ErrNotNow
	}
	if ss.actions&Quarantine == 0 {
		return ErrNotNegotiated
	}
	reason = clip(reason, maxReplyText)
	start := ss.begin(repQuarantine)
	b := ss.bufs
	for i := 0; i < len(reason); i++ {
		c := reason[i]
		if c == 0 || c == '\r' || c == '\n' {
			c = ' '
		}
		b.out = append(b.out, c)
	}
	b.out = append(b.out, 0)
	ss.end(start)
	return nil
}

// KeepAlive tells the MTA every interval that the message is still
// being worked on, for at most limit: the handler may then work in
// EndOfMessage beyond the MTA's timeout (Postfix:
// milter_content_timeout), but not for ever. The server's one ticker
// sends it (within progressTick of its time), so a message answered
// quickly costs no timer of its own (a timer a message woke the
// runtime's poller: two system calls). stop ends it, after any
// progress being written; the session writes nothing else meanwhile.
func (ss *Session) KeepAlive(every, limit time.Duration) (stop func()) {
	s := ss.srv
	now := time.Now()
	ss.kaMu.Lock()
	ss.kaOn = true
	ss.kaMu.Unlock()
	s.mu.Lock()
	ss.kaEvery, ss.kaNext, ss.kaUntil = every, now.Add(every), now.Add(limit)
	s.alive[ss] = true
	s.mu.Unlock()
	s.tickOnce.Do(func() { go s.keepAlives() })
	return func() {
		s.mu.Lock()
		delete(s.alive, ss)
		s.mu.Unlock()
		// After a progress being written, and before any other.
		ss.kaMu.Lock()
		ss.kaOn = false
		ss.kaMu.Unlock()
	}
}

// progressTick is how often the server looks for progress to send.
const progressTick = 100 * time.Millisecond

// keepAlives sends the progress KeepAlive asks for, until Shutdown.
func (s *Server) keepAlives() {
	t := time.NewTicker(progressTick)
	defer t.Stop()
	var due []*Session
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		now := time.Now()
		due = due[:0]
		s.mu.Lock()
		for ss := range s.alive {
			switch {
			case now.After(ss.kaUntil):
				delete(s.alive, ss)
			case !now.Before(ss.kaNext):
				ss.kaNext = now.Add(ss.kaEvery)
				due = append(due, ss)
			}
		}
		s.mu.Unlock()
		for _, ss := range due {
			ss.progress()
		}
	}
}

// progress writes a progress packet, unless KeepAlive stopped.
func (ss *Session) progress() {
	ss.kaMu.Lock()
	defer ss.kaMu.Unlock()
	if !ss.kaOn {
		return // stopped since it was found due
	}
	ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.opts.WriteTimeout)) //nolint:errcheck // the write reports it
	ss.conn.Write(progressPacket)                                      //nolint:errcheck // the session finds the socket broken
}

var progressPacket = []byte{0, 0, 0, 1, repProgress}
