// Package milter is wehr's Postfix milter (the protocol is milterproto's).
// Inbound, it buffers each message, runs the verdict engine at end
// of message, removes Authentication-Results headers that claim our
// authserv-id, adds ours at the very top, and refuses, quarantines or
// accepts as the verdict says. Mail from trusted networks, authenticated
// users and outbound smtpd instances is not verified as inbound mail.
//
// The milter never discards a message: every refusal is an SMTP reply.
package milter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/wehr/wehr/arc"
	"github.com/wehr/wehr/deadline"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/milterproto"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/smtpreply"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/workers"
)

// Quarantine modes.
const (
	QuarantineHeader = "header" // add a marker header (Dovecot Sieve files it into Junk)
	QuarantineHold   = "hold"   // Postfix HOLD queue, through the milter quarantine action
)

// Config configures the milter; with yaml keys, it is the milter:
// section of the configuration file (settings.go has its defaults and
// checks). The fields without a key come from other sections or are
// the daemon's to set.
type Config struct {
	listener.Settings `yaml:",inline"`
	// ExtraAuthservIDs are further ids whose A-R headers are removed
	// from inbound mail (e.g. the names of other nodes of the cluster).
	ExtraAuthservIDs []string `yaml:"extra_authserv_ids"`
	// TrustedNetworks send outbound mail, not verified as inbound.
	TrustedNetworks []setting.Network `yaml:"trusted_networks"`
	// OutboundDaemons are {daemon_name} values (milter_macro_daemon_name)
	// of smtpd instances that take outbound mail, e.g. ORIGINATING.
	OutboundDaemons []string `yaml:"outbound_daemon_names"`
	// Quarantine is QuarantineHeader or QuarantineHold.
	Quarantine string `yaml:"quarantine"`
	// QuarantineHeaderName is the marker's field name.
	QuarantineHeaderName string `yaml:"quarantine_header"`
	// BodyMemory is how much of a message is kept in memory before it
	// spills to a temp file in TempDir.
	BodyMemory int    `yaml:"body_memory"`
	TempDir    string `yaml:"temp_dir"`
	// Timeout bounds one message's verification or signing; past it
	// the message gets a 451.
	Timeout time.Duration `yaml:"timeout"`
	// IdleTimeout ends a session that sends nothing for that long
	// (default 10m, above Postfix's smtpd_timeout); MaxConnections caps
	// the connections served at once (default 500).
	IdleTimeout    time.Duration `yaml:"idle_timeout"`
	MaxConnections int           `yaml:"max_connections"`

	// AuthservID is ours, in the A-R we write and remove (authserv_id).
	AuthservID string `yaml:"-"`
	// HeaderBytes caps the header section of outbound mail (inbound
	// mail has the engine's cap); 0: 1 MiB (limits.header_bytes).
	HeaderBytes int `yaml:"-"`
	// OnKeyError is what outbound mail of a domain whose DKIM keys are
	// broken gets: KeyErrorTempfail (default) or KeyErrorUnsigned
	// (dkim.on_key_error).
	OnKeyError string `yaml:"-"`
	// RefuseUnauthorized answers 553 5.7.1 to outbound mail whose From
	// the sender may not use, instead of sending it unsigned
	// (dkim.unauthorized_sender: refuse).
	RefuseUnauthorized bool `yaml:"-"`
	// Keys are the DKIM keys outbound mail is signed with (nil: no
	// signing); SetKeys replaces them at run time.
	Keys *dkimkeys.Set `yaml:"-"`
	// Senders says which From addresses a sender may sign for; without
	// it nothing is signed.
	Senders *sendermap.Holder `yaml:"-"`
	// History, if set, records the networks that deliver DMARC-passing
	// mail for each author domain.
	History *store.PassHistory `yaml:"-"`
	// Observer, if set, counts what the milter does (metrics).
	Observer Observer `yaml:"-"`
	// Reports, if set, records the DMARC report rows of every inbound
	// message verified (it must not block).
	Reports Reports `yaml:"-"`
	// ARC says which accepted inbound mail we seal, and as whom (the
	// arc: section); the key is SealDomain's in Keys.
	ARC arc.Config `yaml:"-"`
}

// Reports records what a verified message contributes to the DMARC
// aggregate reports; *dmarcreport.Recorder is one.
type Reports interface {
	Record(v *mailauth.Verdict, env mailauth.Envelope)
}

// Observer counts messages and store failures; *metrics.Metrics is one.
type Observer interface {
	Message(action string, d time.Duration)
	StoreError(user string)
}

// observe reports a finished message, if anyone listens.
func (ss *session) observe(action string) {
	if o := ss.set.cfg.Observer; o != nil {
		o.Message(action, time.Since(ss.start))
	}
}

// Server is the milter server.
type Server struct {
	log  *slog.Logger
	srv  *milterproto.Server
	cur  atomic.Pointer[setup]
	keys atomic.Pointer[dkimkeys.Set]
	// verifiers run the engine, on workers whose stacks have grown.
	verifiers *workers.Pool
}

// setup is what a reload replaces; a message keeps the setup it started
// with.
type setup struct {
	cfg    Config
	engine *mailauth.Engine
	ids    map[string]bool // lower-case authserv-ids whose headers we remove
}

func newSetup(engine *mailauth.Engine, cfg Config) *setup {
	if cfg.Quarantine == "" {
		cfg.Quarantine = QuarantineHeader
	}
	if cfg.QuarantineHeaderName == "" {
		cfg.QuarantineHeaderName = "X-Wehr-Quarantine"
	}
	if cfg.BodyMemory <= 0 {
		cfg.BodyMemory = 1 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.HeaderBytes <= 0 {
		cfg.HeaderBytes = 1 << 20
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 500
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	st := &setup{cfg: cfg, engine: engine, ids: map[string]bool{authres.LooseID(cfg.AuthservID): true}}
	for _, id := range cfg.ExtraAuthservIDs {
		st.ids[authres.LooseID(id)] = true
	}
	return st
}

// Reload replaces the engine and the configuration (SIGHUP); sessions in
// progress finish their message with the old ones. cfg.Keys, if nil,
// keeps the loaded keys.
func (s *Server) Reload(engine *mailauth.Engine, cfg Config) {
	s.cur.Store(newSetup(engine, cfg))
	if cfg.Keys != nil {
		s.keys.Store(cfg.Keys)
	}
}

// Keys returns the signing keys in use (nil: none).
func (s *Server) Keys() *dkimkeys.Set { return s.keys.Load() }

// SetKeys replaces the signing keys (after a reload or a rotation step);
// messages in progress keep the keys they started with.
func (s *Server) SetKeys(k *dkimkeys.Set) { s.keys.Store(k) }

// What outbound mail gets when its domain's DKIM keys are broken.
const (
	KeyErrorTempfail = "tempfail"
	KeyErrorUnsigned = "unsigned"
)

// New makes a milter server.
func New(engine *mailauth.Engine, cfg Config, log *slog.Logger) *Server {
	s := &Server{log: log, verifiers: workers.New(256, time.Minute)}
	st := newSetup(engine, cfg)
	s.cur.Store(st)
	if cfg.Keys != nil {
		s.keys.Store(cfg.Keys)
	}
	s.srv = milterproto.NewServer(milterproto.Options{
		// Quarantine is negotiated even for the header mode, so that a
		// reload may switch to hold.
		Actions: milterproto.AddHeaders | milterproto.ChangeHeaders | milterproto.Quarantine,
		// We decide only at end of message, so every earlier stage is
		// negotiated as no-reply; header values come with their
		// leading space.
		Protocol: milterproto.NoUnknown | milterproto.NoData | milterproto.NoConnReply | milterproto.NoHeloReply |
			milterproto.NoMailReply | milterproto.NoRcptReply | milterproto.NoDataReply | milterproto.NoHeaderReply |
			milterproto.NoEOHReply | milterproto.NoBodyReply | milterproto.HeaderLeadingSpace,
		Macros: map[milterproto.Stage][]string{
			milterproto.StageConnect: {macroDaemonName, macroMTAName},
			milterproto.StageMail:    {macroAuthAuthen, macroQueueID},
			milterproto.StageEOM:     {macroQueueID},
		},
		// A session stalled mid-message is closed, not held for ever.
		IdleTimeout: st.cfg.IdleTimeout,
	}, log, func(ms *milterproto.Session) milterproto.Handler {
		return &session{s: s, ms: ms, id: ms.ID(), set: s.cur.Load()}
	})
	return s
}

// Serve answers Postfix on ln until ctx is done, then lets sessions in
// progress finish (up to 10 s) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	// Out of file descriptors, a local user opening connections by the
	// hundred: wait and retry, never return (listener.Limit).
	ln = listener.Limit(ln, s.cur.Load().cfg.MaxConnections, "milter", s.log)
	go func() { errc <- s.srv.Serve(ln) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("milter: serve %s: %w", ln.Addr(), err)
		}
		return nil
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("milter: shutdown: %w", err)
	}
	<-errc
	return nil
}

// Sessions is the number of MTA connections served so far.
func (s *Server) Sessions() uint64 { return s.srv.Sessions() }

// The macros we ask Postfix for.
const (
	macroDaemonName = "{daemon_name}" // milter_macro_daemon_name
	macroMTAName    = "j"
	macroAuthAuthen = "{auth_authen}" // the SASL login of the sender
	macroQueueID    = "i"
)

// session is one MTA connection; milterproto calls its methods one at a
// time, from the connection's goroutine.
type session struct {
	s   *Server
	ms  *milterproto.Session
	set *setup // the configuration of the current connection or message
	id  uint64

	client   net.IP
	host     string
	helo     string
	outbound string // why the connection is outbound, "" for inbound
	// connFailed and failed make every message of the connection, or
	// the current one, get a 451: a callback panicked or spooling failed.
	connFailed error
	failed     error

	// per message
	mailFrom string
	rcpts    []string
	authUser string
	msgID    string         // the Message-ID, for the log (wehr explain)
	counts   map[string]int // header name (lower case) → occurrences so far, of the names we may delete
	remove   []removal      // headers to delete at end of message
	spool    *spool
	start    time.Time
}

// removal is a header to delete: Postfix's change-header index counts
// headers of the same name, from 1, as they were sent to us.
type removal struct {
	name  string
	index int
	why   string
}

// guard turns a panic in a callback into a temporary failure of the
// message, with a log line (milterproto would close the connection).
func (ss *session) guard(stage string, resp *milterproto.Reply) {
	r := recover()
	if r == nil {
		return
	}
	if stage == "connect" || stage == "helo" {
		ss.connFailed = fmt.Errorf("panic in %s: %v", stage, r)
	} else {
		ss.failed = fmt.Errorf("panic in %s: %v", stage, r)
	}
	ss.s.log.Error("milter: panic", "session", ss.id, "stage", stage, "panic", r, "stack", string(debug.Stack()))
	if resp != nil {
		*resp = ss.tempfail("4.3.0 Internal error in the mail filter; please try again later")
	}
}

// tempfail answers 451 with an enhanced code and a text (check "milter":
// our own trouble, never the sender's).
func (ss *session) tempfail(text string) milterproto.Reply {
	enhanced, rest, _ := strings.Cut(text, " ")
	return ss.respond(smtpreply.Reply{Code: 451, Enhanced: enhanced, Text: rest, Check: "milter"})
}

// respond turns a decision into the milter reply; Postfix insists on the
// enhanced code matching the reply code, which Valid checks. A reply
// that is not one is our bug: logged, and the message gets a plain 451.
func (ss *session) respond(r smtpreply.Reply) milterproto.Reply {
	err := r.Valid()
	if err == nil {
		var rep milterproto.Reply
		if rep, err = milterproto.ReplyCode(r.Code, r.Enhanced+" "+r.Text); err == nil {
			return rep
		}
	}
	ss.s.log.Error("milter: a reply we cannot send; answered 451 instead", "session", ss.id, "reply", r.String(), "check", r.Check, "error", err)
	return milterproto.TempFail
}

func (ss *session) Connect(host, family string, port uint16, addr string) {
	defer ss.guard("connect", nil)
	ss.set = ss.s.cur.Load()
	ss.host = host
	ss.client = net.ParseIP(addr)
	switch {
	case family == "unix" || family == "unknown" || ss.client == nil:
		ss.outbound = "local connection"
	default:
		if a, ok := netip.AddrFromSlice(ss.client); ok {
			if p, ok := setting.Contains(ss.set.cfg.TrustedNetworks, a); ok {
				ss.outbound = "trusted network " + p.String()
			}
		}
	}
	if d := ss.ms.Macro(macroDaemonName); d != "" {
		for _, o := range ss.set.cfg.OutboundDaemons {
			if d == o {
				ss.outbound = "outbound smtpd " + d
			}
		}
	}
}

func (ss *session) Helo(name string) {
	defer ss.guard("helo", nil)
	ss.helo = name
}

func (ss *session) MailFrom(from string) {
	defer ss.guard("mail", nil)
	ss.reset()
	ss.set = ss.s.cur.Load()
	ss.start = time.Now()
	ss.mailFrom = from
	ss.authUser = ss.ms.Macro(macroAuthAuthen)
	ss.msgID = ""
	ss.spool = newSpool(ss.set.cfg.BodyMemory, ss.set.cfg.TempDir)
}

func (ss *session) RcptTo(rcpt string) {
	defer ss.guard("rcpt", nil)
	ss.rcpts = append(ss.rcpts, rcpt)
}

func (ss *session) Header(name, value string) {
	defer ss.guard("header", nil)
	if ss.spool == nil {
		return
	}
	// Postfix's change-header index counts the fields of one name; only
	// the names we may delete are counted.
	ar := strings.EqualFold(name, "Authentication-Results") || strings.EqualFold(name, "X-Authentication-Results")
	marker := strings.EqualFold(name, ss.set.cfg.QuarantineHeaderName)
	index := 0
	if ar || marker {
		if ss.counts == nil {
			ss.counts = map[string]int{} // most messages delete nothing
		}
		lname := strings.ToLower(name)
		ss.counts[lname]++
		index = ss.counts[lname]
	}
	switch {
	case ar:
		// Never trust results we did not compute (CVE-2019-20790): a
		// header carrying our authserv-id came from outside.
		// Ours in any spelling a reader might take for ours (a trailing
		// dot, a quoted or escaped id, a no-break space after it).
		id := authres.LooseID(value)
		_, perr := authres.AuthservID(value)
		switch {
		case ss.set.ids[id]:
			ss.remove = append(ss.remove, removal{name: name, index: index, why: "forged authserv-id " + id})
		case perr != nil && ss.mentionsOurID(value):
			// An unparsable one goes only if it might be ours.
			ss.remove = append(ss.remove, removal{name: name, index: index, why: "unparsable: " + perr.Error()})
		}
	case ss.msgID == "" && strings.EqualFold(name, "Message-ID"):
		ss.msgID = strings.TrimSpace(strings.ReplaceAll(value, "\n", ""))
		if len(ss.msgID) > 200 {
			ss.msgID = ss.msgID[:200]
		}
	case marker:
		ss.remove = append(ss.remove, removal{name: name, index: index, why: "inbound copy of our quarantine marker"})
	}
	// With leading-space negotiation the value is exactly what followed
	// the colon; continuation lines are LF-separated.
	if err := ss.spool.writeField(name, value); err != nil {
		ss.failed = err
	}
}

func (ss *session) mentionsOurID(v string) bool {
	lv := strings.ToLower(v)
	for id := range ss.set.ids {
		if strings.Contains(lv, id) {
			return true
		}
	}
	return false
}

func (ss *session) EndOfHeaders() {
	defer ss.guard("end of headers", nil)
	if ss.spool != nil {
		if _, err := ss.spool.Write([]byte("\r\n")); err != nil {
			ss.failed = err
		}
	}
}

func (ss *session) Body(chunk []byte) {
	defer ss.guard("body", nil)
	if ss.spool != nil && ss.failed == nil {
		if _, err := ss.spool.Write(chunk); err != nil {
			ss.failed = err
		}
	}
}

func (ss *session) Abort() {
	defer ss.guard("abort", nil)
	ss.reset()
}

func (ss *session) Close() {
	defer ss.guard("close", nil)
	ss.reset()
}

// reset forgets the message, keeping the connection.
func (ss *session) reset() {
	if ss.spool != nil {
		ss.spool.Close()
	}
	ss.spool, ss.mailFrom, ss.rcpts, ss.authUser, ss.counts, ss.remove, ss.failed = nil, "", nil, "", nil, nil, nil
}

func (ss *session) EndOfMessage() (resp milterproto.Reply) {
	defer ss.guard("end of message", &resp)
	qid := ss.ms.Macro(macroQueueID)
	// The message's logger, made when a line is logged: formatting the
	// client and the rest was 3 % of a message's CPU where the log
	// level leaves nothing to log.
	var logger *slog.Logger
	log := func() *slog.Logger {
		if logger == nil {
			logger = ss.s.log.With("queue_id", qid, "session", ss.id, "client", ss.clientString(), "helo", ss.helo, "mail_from", ss.mailFrom)
		}
		return logger
	}
	defer ss.reset()

	if ss.failed == nil {
		ss.failed = ss.connFailed
	}
	if ss.failed != nil {
		ss.observe("tempfail")
		log().Error("milter: message not verified, answered 451", "error", ss.failed)
		return ss.tempfail("4.3.0 Mail filter error; please try again later")
	}
	if ss.spool == nil {
		log().Error("milter: end of message without MAIL FROM; answered 451")
		return ss.tempfail("4.5.0 Mail filter saw no MAIL FROM; please try again")
	}
	outbound := ss.outbound
	if outbound == "" && ss.authUser != "" {
		outbound = "authenticated as " + ss.authUser
	}
	if outbound != "" {
		// Outbound and local mail too: a user must not hand a colleague
		// our authserv-id vouching for a bank (RFC 8601 5). The fields
		// go before anything is signed or inserted.
		if err := ss.removeForged(log()); err != nil {
			ss.observe("tempfail")
			log().Error("milter: removing forged headers failed, answered 451", "error", err)
			return ss.tempfail("4.3.0 Mail filter could not change the headers; please try again later")
		}
		return ss.outboundMessage(log().With("outbound", outbound))
	}

	v, err := ss.verify()
	if err != nil {
		ss.observe("tempfail")
		attrs := []any{"error", err, "duration_ms", time.Since(ss.start).Milliseconds()}
		if ie, ok := errors.AsType[*mailauth.InternalError](err); ok {
			attrs = append(attrs, "stack", string(ie.Stack))
		}
		log().Error("milter: verification failed, answered 451", attrs...)
		return ss.tempfail("4.3.0 Could not check this message; please try again later")
	}
	// What the decision's line says (only made if it is logged).
	attrs := func() []any {
		return []any{"action", v.Action, "spf", v.SPF.Result, "dkim", dkimSummary(v.DKIM), "dmarc", v.DMARC.Result,
			"from_domain", v.DMARC.FromDomain, "policy", v.DMARC.Policy, "disposition", v.DMARC.Disposition,
			"overrides", strings.Join(v.DMARC.Overrides, ","), "evidence", strings.Join(v.DMARC.RefusalEvidence, ","),
			"iprev", v.IPRev.Result, "arc", v.ARC.Result, "message_id", ss.msgID, "dns_queries", v.DNSQueries, "removed_headers", len(ss.remove),
			"size", ss.spool.size, "duration_ms", time.Since(ss.start).Milliseconds()}
	}
	info := ss.s.log.Enabled(context.Background(), slog.LevelInfo)

	ss.recordHistory(v, log)
	if rep := ss.set.cfg.Reports; rep != nil {
		rep.Record(v, mailauth.Envelope{ClientIP: ss.client, Helo: ss.helo, MailFrom: ss.mailFrom, RcptTo: ss.rcpts})
	}
	if v.Reply != nil {
		ss.observe(v.Action)
		if info {
			log().Info("milter: refused", append(attrs(), "reply", v.Reply.String(), "check", v.Reply.Check)...)
		}
		return ss.respond(*v.Reply)
	}
	if err := ss.modify(v); err != nil {
		ss.observe("tempfail")
		log().Error("milter: changing the headers failed, answered 451", append(attrs(), "error", err)...)
		return ss.tempfail("4.3.0 Mail filter could not add its header; please try again later")
	}
	ss.observe(v.Action)
	if info {
		log().Info("milter: "+v.Action, attrs()...)
	}
	return milterproto.Accept
}

// recordHistory notes the networks that deliver passing mail; best
// effort: a store that does not answer costs nothing but the history.
func (ss *session) recordHistory(v *mailauth.Verdict, log func() *slog.Logger) {
	h := ss.set.cfg.History
	if h == nil || ss.client == nil {
		return
	}
	for _, d := range v.AllDMARC {
		if d.Result != mailauth.DMARCPass {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := h.Record(ctx, d.FromDomain, ss.client)
		cancel()
		if err != nil {
			if o := ss.set.cfg.Observer; o != nil {
				o.StoreError("milter")
			}
			log().Warn("milter: pass history not recorded", "from_domain", d.FromDomain, "error", err)
			return
		}
	}
}

func (ss *session) clientString() string {
	if ss.client == nil {
		return ss.host
	}
	return ss.client.String()
}

func dkimSummary(ds []mailauth.DKIMResult) string {
	if len(ds) == 0 {
		return "none"
	}
	var parts []string
	for _, d := range ds {
		parts = append(parts, string(d.Result)+":"+d.Domain)
	}
	return strings.Join(parts, ",")
}

// verify runs the engine, and tells Postfix every second meanwhile that
// we are alive, up to the milter's timeout. The engine keeps its own
// deadline (limits.deadline, below the timeout); a panic in it is our
// bug, and the message gets a 451.
func (ss *session) verify() (v *mailauth.Verdict, err error) {
	rd, err := ss.spool.Reader()
	if err != nil {
		return nil, err
	}
	env := mailauth.Envelope{ClientIP: ss.client, Helo: ss.helo, MailFrom: ss.mailFrom, RcptTo: ss.rcpts}
	ctx, cancel := deadline.Timeout(context.Background(), ss.set.cfg.Timeout)
	defer cancel()
	defer ss.ms.KeepAlive(time.Second, ss.set.cfg.Timeout)()
	defer func() {
		if r := recover(); r != nil {
			ss.s.log.Error("milter: panic in the engine", "session", ss.id, "panic", r, "stack", string(debug.Stack()))
			v, err = nil, fmt.Errorf("panic in the engine: %v", r)
		}
	}()
	return ss.set.engine.Verify(ctx, env, rd)
}

// deleteRemovals deletes the fields to remove, from the highest index
// down (Postfix renumbers after each; OpenDKIM #185).
func (ss *session) deleteRemovals() error {
	for i := len(ss.remove) - 1; i >= 0; i-- {
		r := ss.remove[i]
		if err := ss.ms.ChangeHeader(r.index, r.name, ""); err != nil {
			return fmt.Errorf("delete %s #%d: %w", r.name, r.index, err)
		}
	}
	return nil
}

// removeForged deletes the forged fields of an outbound message, and
// logs each.
func (ss *session) removeForged(log *slog.Logger) error {
	for _, r := range ss.remove {
		log.Info("milter: removed a forged header", "header", r.name, "why", r.why)
	}
	return ss.deleteRemovals()
}

// modify removes forged headers and adds ours. Deletes come first, from
// the highest index down (Postfix renumbers after each; OpenDKIM #185),
// and before our insert (Postfix counts inserted headers in the indexes).
func (ss *session) modify(v *mailauth.Verdict) error {
	if err := ss.deleteRemovals(); err != nil {
		return err
	}
	if v.Action == mailauth.ActionQuarantine {
		reason := "DMARC " + v.DMARC.FromDomain + " " + v.DMARC.PolicyTag + "=" + v.DMARC.Policy
		if len(v.DMARC.Overrides) > 0 {
			reason += ", " + strings.Join(v.DMARC.Overrides, " ")
		}
		if ss.set.cfg.Quarantine == QuarantineHold {
			if err := ss.ms.Quarantine(reason); err != nil {
				return fmt.Errorf("quarantine: %w", err)
			}
		} else if err := ss.ms.InsertHeader(0, ss.set.cfg.QuarantineHeaderName, " yes ("+reason+")"); err != nil {
			return fmt.Errorf("insert %s: %w", ss.set.cfg.QuarantineHeaderName, err)
		}
	}
	// A leading space, as we negotiated leading-space handling.
	value := " " + authres.FoldValue(v.AuthenticationResults, "\n")
	if err := ss.ms.InsertHeader(0, "Authentication-Results", value); err != nil {
		return fmt.Errorf("insert Authentication-Results: %w", err)
	}
	return ss.seal(v)
}

// seal adds our ARC set (RFC 8617 5.1) to an accepted inbound message
// that arc.seal says we pass on: our results in the AAR, signed with
// the seal domain's active key. It fails only when the milter cannot
// change the headers; a seal we cannot make is logged and the message
// goes on unsealed.
func (ss *session) seal(v *mailauth.Verdict) error {
	cfg := ss.set.cfg.ARC
	if !cfg.Wants(ss.rcpts) || (v.Action == mailauth.ActionQuarantine && ss.set.cfg.Quarantine == QuarantineHold) {
		return nil
	}
	log := ss.s.log.With("session", ss.id, "queue_id", ss.ms.Macro(macroQueueID))
	keys := ss.s.keys.Load()
	if keys == nil {
		log.Error("milter: arc.seal is on but there are no DKIM keys (dkim.keys_dir): not sealed")
		return nil
	}
	_, all, err := keys.Signing(cfg.SealDomain)
	// RFC 8617 defines ARC for rsa-sha256 only.
	var ks []*dkimkeys.Key
	for _, k := range all {
		if k.Algorithm == dkimkeys.RSA {
			ks = append(ks, k)
		}
	}
	if err != nil || len(ks) == 0 {
		log.Error("milter: no active RSA key of arc.seal_domain (ARC seals are rsa-sha256): not sealed", "seal_domain", cfg.SealDomain, "error", err)
		return nil
	}
	rd, err := ss.spool.Reader()
	if err != nil {
		return fmt.Errorf("arc seal: %w", err)
	}
	br := bufio.NewReader(rd)
	h, err := mailauth.ReadHeader(br, 0)
	if err != nil {
		log.Error("milter: cannot read the header to seal: not sealed", "error", err)
		return nil
	}
	if _, err := rd.Seek(int64(h.Size), io.SeekStart); err != nil {
		return fmt.Errorf("arc seal: %w", err)
	}
	var signed []string
	for _, name := range arc.DefaultHeaders {
		if h.Get(name) != "" {
			signed = append(signed, name)
		}
	}
	results := v.AuthenticationResults
	if _, rest, ok := strings.Cut(results, ";"); ok {
		results = strings.TrimSpace(rest)
	}
	chain := v.ARC
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sealed, err := arc.Seal(ctx, nil, h, rd, arc.SealOptions{Domain: ks[0].Domain, Selector: ks[0].Selector, Key: ks[0].Signer,
		AuthservID: ss.set.cfg.AuthservID, Results: results, Headers: signed, Now: time.Now(), Chain: &chain})
	if errors.Is(err, arc.ErrChainFailed) {
		log.Info("milter: not sealed: the chain already failed before us")
		return nil
	}
	if err != nil {
		log.Error("milter: sealing failed: not sealed", "error", err)
		return nil
	}
	for _, f := range []struct{ name, value string }{{arc.AARName, sealed.AAR}, {arc.AMSName, sealed.AMS}, {arc.SealName, sealed.Seal}} {
		if err := ss.ms.InsertHeader(0, f.name, " "+strings.ReplaceAll(f.value, "\r\n", "\n")); err != nil {
			return fmt.Errorf("insert %s: %w", f.name, err)
		}
	}
	log.Info("milter: sealed", "instance", sealed.Instance, "seal_domain", ks[0].Domain, "selector", ks[0].Selector, "cv", v.ARC.Result)
	return nil
}
