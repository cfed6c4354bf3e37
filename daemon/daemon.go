// Package daemon runs wehr's daemons in one process and carries them
// through their life: start (each part that can fail alone degrades
// alone), SIGHUP reloads of the configuration, the DKIM keys and the
// sender map, scheduled key rotations, and shutdown. cmd/wehr parses
// flags and calls Run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/wehr/wehr/authpolicy"
	"github.com/wehr/wehr/config"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/metrics"
	"github.com/wehr/wehr/milter"
	"github.com/wehr/wehr/milterproto"
	"github.com/wehr/wehr/mtasts"
	"github.com/wehr/wehr/policyd"
	"github.com/wehr/wehr/resolver"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/web"
)

// SetupError is a configuration or command line that cannot work (a
// listen address, a socket owner, a sender map that does not load):
// wehr exits with status 2.
type SetupError struct{ Err error }

func (e SetupError) Error() string { return e.Err.Error() }
func (e SetupError) Unwrap() error { return e.Err }

func setupf(format string, args ...any) error { return SetupError{fmt.Errorf(format, args...)} }

// Options say what a process runs.
type Options struct {
	Config *config.Config
	// Path is the file Config came from; "" for the built-in defaults
	// (a reload then has nothing to read).
	Path     string
	Log      *slog.Logger
	Resolver *resolver.Resolver
	// Milter and Policyd choose the daemons; with both, the process
	// owns the embedded store (wehr serve).
	Milter, Policyd bool
	// MilterListen and PolicydListen, if set, replace the configured
	// listen addresses (the --listen flags).
	MilterListen, PolicydListen string
	// AuthPolicy runs Dovecot's auth policy service, where
	// authpolicy.listen (or AuthPolicyListen) says.
	AuthPolicy       bool
	AuthPolicyListen string
	// MTASTS runs the MTA-STS policy service where mtasts.listen says.
	MTASTS bool
	// Web serves the web view of the reports where web.listen says.
	Web bool
}

// Daemon is a running process. Reload and Config are safe to call while
// Run runs.
type Daemon struct {
	opt Options
	log *slog.Logger
	res *resolver.Resolver

	mu  sync.Mutex     // serialises reloads
	cfg *config.Config // what runs: the last accepted file, restart-only keys as started

	st       store.Store
	senders  *sendermap.Holder
	keyStore *dkimkeys.Store
	history  *store.PassHistory
	m        *milter.Server  // nil without the milter
	web      *web.Server     // nil without the web view
	pd       *policyd.Server // nil without the policy service
	metrics  *metrics.Metrics
	reports  *dmarcreport.Recorder // nil: no report rows recorded
	ap       *authpolicy.Server    // nil: no auth policy service
	ready    atomic.Bool           // every listener is up
	rotate   chan time.Duration    // a new dkim.rotation_check for the schedule
}

// New prepares a process; Run starts it.
func New(opt Options) *Daemon {
	return &Daemon{opt: opt, log: opt.Log, res: opt.Resolver, cfg: opt.Config,
		metrics: metrics.New(opt.Resolver), rotate: make(chan time.Duration, 1)}
}

// Config returns the configuration in effect.
func (d *Daemon) Config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Run starts the daemons and runs them until ctx ends or one fails.
func Run(ctx context.Context, opt Options) error { return New(opt).Run(ctx) }

// engine builds the verdict engine of cfg.
func (d *Daemon) engine(cfg *config.Config) *mailauth.Engine {
	ecfg := cfg.Engine()
	if d.history != nil {
		ecfg.History = d.history
	}
	return mailauth.NewEngine(d.res, ecfg)
}

// milterConfig builds the milter's configuration of cfg (keys are set
// apart).
func (d *Daemon) milterConfig(cfg *config.Config) milter.Config {
	mc := cfg.MilterServer()
	mc.Senders, mc.History, mc.Observer = d.senders, d.history, d.metrics
	if d.reports != nil {
		mc.Reports = d.reports
	}
	return mc
}

// pipeline builds the policy pipeline of cfg.
func (d *Daemon) pipeline(cfg *config.Config) *policyd.Pipeline {
	pc := cfg.PolicydPipeline()
	pc.Observer = d.metrics
	pc.Submission.Senders = d.senders
	return policyd.NewPipeline(pc, d.res, d.st, d.log)
}

// openStore opens the configured store for a daemon process: the
// embedded file (only a process running both daemons may: one owner),
// or Redis.
func openStore(cfg *config.Config, owner bool) (store.Store, error) {
	if cfg.Store.Backend == "redis" {
		return store.OpenRedis(cfg.Store.Redis)
	}
	if !owner {
		return nil, setupf("the embedded store belongs to wehr serve: run wehr serve, or set store.backend: redis to run the daemons as separate processes")
	}
	return store.OpenEmbedded(cfg.Store.Path)
}

// Run starts the daemons and runs them until ctx ends or one fails.
func (d *Daemon) Run(ctx context.Context) error {
	paceCollector()
	grp, ctx := errgroup.WithContext(ctx)
	cfg, log := d.cfg, d.log
	if d.opt.Policyd || d.opt.AuthPolicy && d.authListen() != "" || d.opt.MTASTS && cfg.MTASTS.Listen != "" || cfg.Store.Backend == "redis" {
		var err error
		if d.st, err = openStore(cfg, d.opt.Milter && d.opt.Policyd); err != nil {
			var se SetupError
			if errors.As(err, &se) || errors.Is(err, store.ErrInUse) {
				return err
			}
			// A store that cannot be opened (a read-only file system)
			// must not stop inbound mail: the checks that need it take
			// their store-down fallback. wehr doctor says FAIL.
			log.Error("wehr: the store cannot be opened; running without it: greylisting, rates, reputation and pass history "+
				"take their store-down fallback (policyd.on_store_error) until it is fixed and wehr restarted",
				"backend", cfg.Store.Backend, "error", err)
			d.st = store.Down{Err: err}
		}
		defer d.st.Close()
		if emb, ok := d.st.(*store.Embedded); ok && emb != nil {
			emb.SetLogger(log)
			if emb.Moved != "" {
				log.Error("wehr: the embedded store was damaged and has been moved aside; starting with an empty one (greylisting, rates, reputation and pass history start over)",
					"path", cfg.Store.Path, "moved_to", emb.Moved, "error", emb.MovedWhy,
					"dmarc_report_records_salvaged", emb.Salvaged, "salvage_error", emb.SalvageErr)
			}
			grp.Go(func() error { return store.ServeAdmin(ctx, emb, cfg.Store.AdminSocket, log) })
			log.Info("wehr: embedded store", "path", cfg.Store.Path, "admin_socket", cfg.Store.AdminSocket)
		} else if cfg.Store.Backend == "redis" {
			log.Info("wehr: Redis store", "mode", cfg.Store.Redis.Mode, "addrs", cfg.Store.Redis.Addrs)
		}
		if cfg.DMARC.PassHistory {
			d.history = store.NewPassHistory(d.st, cfg.DMARC.PassHistoryKeep)
		}
		if cfg.Reports.Record && d.opt.Milter {
			d.reports = dmarcreport.NewRecorder(d.st, cfg.Reports.Queue, log, d.metrics)
			grp.Go(func() error { d.reports.Run(ctx); return nil })
		}
	}
	if l := cfg.Metrics.Listen; l != "" {
		a, err := listener.ParseAddress(l, cfg.Metrics.AllowRemote)
		if err != nil {
			return setupf("metrics.listen: %v", err)
		}
		ln, err := listener.Listen(a, listener.SocketPerms{})
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", d.metrics.Handler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		mux.HandleFunc("/readyz", d.readyz)
		if cfg.Metrics.Pprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			log.Warn("wehr: profiler at http://" + a.Address + "/debug/pprof/ (metrics.pprof)")
		}
		grp.Go(func() error {
			// A CPU profile takes its seconds to answer.
			if err := listener.ServeHTTP(ctx, ln, mux, listener.HTTP{WriteTimeout: 2 * time.Minute}); err != nil {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
		log.Info("wehr: metrics at http://" + a.Address + "/metrics")
	}
	if p := cfg.DKIM.SenderMap; p != "" {
		var err error
		if d.senders, err = sendermap.NewHolder(p); err != nil {
			return SetupError{err}
		}
	}
	if d.opt.Policyd {
		addr, perms, err := cfg.Policyd.Address(d.opt.PolicydListen)
		if err != nil {
			return setupf("%v", err)
		}
		if addr.Network == "unix" {
			if err := cfg.Policyd.CheckOwner("policyd"); err != nil {
				return SetupError{err}
			}
		}
		ln, err := listener.Listen(addr, perms)
		if err != nil {
			return err
		}
		ln = listener.AckUnless(ln, policyd.EndsRequest)
		d.pd = policyd.NewServer(d.pipeline(cfg), log, cfg.Policyd.IdleTimeout)
		d.pd.MaxConnections = cfg.Policyd.MaxConnections
		log.Info("wehr: policy service listening", "listen", addr.String(), "dns_lists", len(cfg.Policyd.DNSLists),
			"greylisting", cfg.Policyd.Greylist.Enabled)
		grp.Go(func() error { return d.pd.Serve(ctx, ln) })
	}
	if l := d.authListen(); d.opt.AuthPolicy && l != "" {
		a, err := listener.ParseAddress(l, cfg.AuthPolicy.AllowRemote)
		if err != nil || a.Network != "tcp" {
			return setupf("authpolicy.listen %q: want inet:HOST:PORT (%v)", l, err)
		}
		ln, err := listener.Listen(a, listener.SocketPerms{})
		if err != nil {
			return err
		}
		d.ap = authpolicy.NewServer(authpolicy.New(cfg.AuthPolicy, d.st, log), log, d.metrics)
		scheme := "http"
		if cfg.AuthPolicy.TLSCert != "" {
			scheme = "https"
		}
		log.Info("wehr: auth policy service listening", "url", scheme+"://"+a.Address+"/", "api_key", cfg.AuthPolicy.APIKey != "")
		grp.Go(func() error { return d.ap.Serve(ctx, ln, cfg.AuthPolicy.TLSCert, cfg.AuthPolicy.TLSKey) })
	}
	if d.opt.MTASTS && cfg.MTASTS.Listen != "" {
		a, err := listener.ParseAddress(cfg.MTASTS.Listen, cfg.MTASTS.AllowRemote)
		if err != nil {
			return setupf("mtasts.listen: %v", err)
		}
		sts := store.NewStsPolicies(d.st)
		r, err := mtasts.NewResolver(cfg.MTASTS, d.res.WithCache(cfg.MTASTS.DNSCacheSize), mtasts.StoreCache{P: sts})
		if err != nil {
			return setupf("%v", err)
		}
		ln, err := listener.Listen(a, listener.SocketPerms{})
		if err != nil {
			return err
		}
		ln = listener.AckUnless(ln, mtasts.EndsRequest)
		// Every 15 minutes one node looks at every cached policy: those
		// whose id changed or that expire within 6 hours are fetched.
		owner := fmt.Sprintf("%s/%d", cfg.Hostname, os.Getpid())
		grp.Go(func() error { r.RefreshLoop(ctx, sts, owner, 15*time.Minute, 6*time.Hour, log); return nil })
		recent := mtasts.NewRecent(cfg.MTASTS.AnswerCache, cfg.MTASTS.AnswerCacheSize)
		srv := &mtasts.SocketmapServer{Log: log, Timeout: cfg.MTASTS.LookupTimeout, Lookup: mtasts.PostfixLookup(r, recent, log)}
		log.Info("wehr: MTA-STS policy service listening", "listen", a.String())
		grp.Go(func() error {
			defer recent.Release()
			return srv.Serve(ctx, listener.Limit(ln, 500, "mtasts", log))
		})
	}
	if d.opt.Web && cfg.Web.Listen != "" {
		a, err := listener.ParseAddress(cfg.Web.Listen, cfg.Web.AllowRemote)
		if err != nil {
			return setupf("web.listen: %v", err)
		}
		ws, err := web.New(cfg.Web, d.st, d.res, d.engine(cfg), log)
		if err != nil {
			return setupf("%v", err)
		}
		ws.FailedDir = cfg.Reports.Failed
		d.web = ws
		ln, err := listener.Listen(a, listener.SocketPerms{})
		if err != nil {
			return err
		}
		scheme := "http"
		if cfg.Web.TLSCert != "" {
			scheme = "https"
		}
		log.Info("wehr: web view of the reports listening", "url", scheme+"://"+a.Address+"/", "tokens", len(cfg.Web.Tokens))
		grp.Go(func() error { return ws.Serve(ctx, listener.Limit(ln, 200, "web", log)) })
	}
	if d.opt.MTASTS && cfg.MTASTS.Serve.Listen != "" {
		ps, err := mtasts.NewPolicyServer(cfg.MTASTS.Serve, log)
		if err != nil {
			return setupf("mtasts.serve: %v", err)
		}
		a, err := listener.ParseAddress(cfg.MTASTS.Serve.Listen, true)
		if err != nil {
			return setupf("mtasts.serve.listen: %v", err)
		}
		ln, err := listener.Listen(a, listener.SocketPerms{})
		if err != nil {
			return err
		}
		log.Info("wehr: serving MTA-STS policies over HTTPS", "listen", a.String(), "domains", len(cfg.MTASTS.Serve.Policies))
		grp.Go(func() error { return ps.Serve(ctx, listener.Limit(ln, 500, "mtasts-https", log)) })
	}
	if d.opt.Milter {
		addr, perms, err := cfg.Milter.Address(d.opt.MilterListen)
		if err != nil {
			return setupf("%v", err)
		}
		if addr.Network == "unix" {
			if err := cfg.Milter.CheckOwner("milter"); err != nil {
				return SetupError{err}
			}
		}
		mc := d.milterConfig(cfg)
		if dir := cfg.DKIM.KeysDir; dir != "" {
			d.keyStore = &dkimkeys.Store{Dir: dir}
			// One broken key file must not stop inbound mail: the
			// domain it belongs to is broken (dkim.on_key_error), the
			// others sign. wehr doctor says FAIL.
			if mc.Keys, err = d.keyStore.Load(); err != nil {
				log.Error("wehr: DKIM keys broken; starting without them: outbound mail of these domains gets dkim.on_key_error="+cfg.DKIM.OnKeyError,
					"broken_domains", brokenDomains(mc.Keys), "error", err)
			}
		}
		if mc.Keys != nil && mc.Senders == nil {
			log.Warn("wehr: dkim.keys_dir is set but dkim.sender_map is not: nothing will be signed")
		}
		ln, err := listener.Listen(addr, perms)
		if err != nil {
			return err
		}
		ln = listener.AckUnless(ln, milterproto.EndsCommand)
		d.m = milter.New(d.engine(cfg), mc, log)
		log.Info("wehr: milter listening", slog.String("listen", addr.String()), slog.String("authserv_id", cfg.AuthservID),
			slog.Any("dns_servers", d.res.Servers()), slog.String("dmarc_refusal", cfg.DMARC.Refusal),
			slog.Int("dkim_domains", domains(mc.Keys)), slog.Bool("sender_map", mc.Senders != nil))
		grp.Go(func() error { return d.m.Serve(ctx, ln) })
	}
	if d.st != nil {
		grp.Go(func() error { d.sendReports(ctx); return nil })
	}
	grp.Go(func() error {
		d.maintain(ctx)
		return nil
	})
	// Every listener is up: tell systemd (Type=notify) and /readyz.
	d.ready.Store(true)
	notify(log, sd.SdNotifyReady)
	go func() {
		<-ctx.Done()
		d.ready.Store(false)
		notify(log, sd.SdNotifyStopping)
	}()
	err := grp.Wait()
	if d.m != nil {
		log.Info("wehr: stopped", slog.Uint64("milter_sessions", d.m.Sessions()))
	} else {
		log.Info("wehr: stopped")
	}
	return err
}

func domains(s *dkimkeys.Set) int {
	if s == nil {
		return 0
	}
	return len(s.Domains())
}

// maintain reloads on SIGHUP and advances key rotations on a schedule.
func (d *Daemon) maintain(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	every := d.Config().DKIM.RotationCheck
	tick := time.NewTicker(every)
	defer tick.Stop()
	d.advance(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.log.Info("wehr: SIGHUP: reloading the configuration, DKIM keys and the sender map")
			notify(d.log, "RELOADING=1\nMONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
			d.Reload(ctx)
			notify(d.log, sd.SdNotifyReady)
		case every = <-d.rotate:
			tick.Reset(every)
		case <-tick.C:
			d.advance(ctx)
		}
	}
}

// Reload reads the config file again and, if it is valid, applies it
// with the DKIM keys and the sender map, then checks key rotations. A
// file with problems changes nothing: each problem is logged, and
// nothing else is loaded. It reports whether the file was taken.
func (d *Daemon) Reload(ctx context.Context) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.opt.Path != "" {
		next, err := config.Load(d.opt.Path)
		if err != nil {
			var ce *config.Errors
			if errors.As(err, &ce) {
				for _, l := range ce.Lines() {
					d.log.Error("wehr: config not reloaded: " + l)
				}
			} else {
				d.log.Error("wehr: config not reloaded", "error", err)
			}
			d.log.Error("wehr: reload refused: the configuration, the DKIM keys and the sender map stay as they were", "path", d.opt.Path)
			return false
		}
		d.applyConfig(next)
	} else {
		d.log.Info("wehr: running on built-in defaults; no config file to reload")
	}
	d.reloadKeys()
	if d.senders != nil {
		if err := d.senders.Reload(); err != nil {
			d.log.Error("wehr: sender map not reloaded, keeping the old one", "error", err)
		} else {
			d.log.Info("wehr: sender map loaded", "path", d.senders.Path(), "entries", d.senders.Map().Size)
		}
	}
	d.advanceLocked(ctx)
	return true
}

// applyConfig makes next the running configuration, but for the keys a
// reload cannot apply: they keep the values the process started with,
// and each that the file changes is named in the log, at every reload
// until the process restarts.
func (d *Daemon) applyConfig(next *config.Config) {
	changed := restartOnly(d.cfg, next)
	for _, key := range changed {
		d.log.Warn("wehr: config change needs a restart to take effect", "key", key)
	}
	keepRestartOnly(next, d.cfg)
	if d.m != nil {
		d.m.Reload(d.engine(next), d.milterConfig(next))
	}
	if d.pd != nil {
		d.pd.SetPipeline(d.pipeline(next))
	}
	if d.ap != nil {
		d.ap.SetPolicy(authpolicy.New(next.AuthPolicy, d.st, d.log))
	}
	if d.web != nil {
		d.web.SetTokens(next.Web.Tokens)
	}
	if next.DKIM.RotationCheck != d.cfg.DKIM.RotationCheck {
		select {
		case d.rotate <- next.DKIM.RotationCheck:
		default:
		}
	}
	d.cfg = next
	d.log.Info("wehr: configuration reloaded", "path", d.opt.Path)
}

// restartOnlyKeys are the settings a reload does not apply, with how to
// read and to restore each.
var restartOnlyKeys = []struct {
	key  string
	get  func(c *config.Config) any
	keep func(dst, src *config.Config)
}{
	{"milter.listen", func(c *config.Config) any { return c.Milter.Listen }, func(d, s *config.Config) { d.Milter.Listen = s.Milter.Listen }},
	{"milter.allow_remote", func(c *config.Config) any { return c.Milter.AllowRemote }, func(d, s *config.Config) { d.Milter.AllowRemote = s.Milter.AllowRemote }},
	{"milter.socket_mode", func(c *config.Config) any { return c.Milter.SocketMode }, func(d, s *config.Config) { d.Milter.SocketMode = s.Milter.SocketMode }},
	{"milter.socket_owner", func(c *config.Config) any { return c.Milter.SocketOwner }, func(d, s *config.Config) { d.Milter.SocketOwner = s.Milter.SocketOwner }},
	{"milter.socket_group", func(c *config.Config) any { return c.Milter.SocketGroup }, func(d, s *config.Config) { d.Milter.SocketGroup = s.Milter.SocketGroup }},
	{"milter.max_connections", func(c *config.Config) any { return c.Milter.MaxConnections }, func(d, s *config.Config) { d.Milter.MaxConnections = s.Milter.MaxConnections }},
	{"policyd.listen", func(c *config.Config) any { return c.Policyd.Listen }, func(d, s *config.Config) { d.Policyd.Listen = s.Policyd.Listen }},
	{"policyd.allow_remote", func(c *config.Config) any { return c.Policyd.AllowRemote }, func(d, s *config.Config) { d.Policyd.AllowRemote = s.Policyd.AllowRemote }},
	{"policyd.socket_mode", func(c *config.Config) any { return c.Policyd.SocketMode }, func(d, s *config.Config) { d.Policyd.SocketMode = s.Policyd.SocketMode }},
	{"policyd.socket_owner", func(c *config.Config) any { return c.Policyd.SocketOwner }, func(d, s *config.Config) { d.Policyd.SocketOwner = s.Policyd.SocketOwner }},
	{"policyd.socket_group", func(c *config.Config) any { return c.Policyd.SocketGroup }, func(d, s *config.Config) { d.Policyd.SocketGroup = s.Policyd.SocketGroup }},
	{"policyd.max_connections", func(c *config.Config) any { return c.Policyd.MaxConnections }, func(d, s *config.Config) { d.Policyd.MaxConnections = s.Policyd.MaxConnections }},
	{"policyd.idle_timeout", func(c *config.Config) any { return c.Policyd.IdleTimeout }, func(d, s *config.Config) { d.Policyd.IdleTimeout = s.Policyd.IdleTimeout }},
	{"metrics", func(c *config.Config) any { return c.Metrics }, func(d, s *config.Config) { d.Metrics = s.Metrics }},
	{"store", func(c *config.Config) any { return c.Store }, func(d, s *config.Config) { d.Store = s.Store }},
	{"dns", func(c *config.Config) any { return c.DNS }, func(d, s *config.Config) { d.DNS = s.DNS }},
	{"log", func(c *config.Config) any { return c.Log }, func(d, s *config.Config) { d.Log = s.Log }},
	{"dkim.keys_dir", func(c *config.Config) any { return c.DKIM.KeysDir }, func(d, s *config.Config) { d.DKIM.KeysDir = s.DKIM.KeysDir }},
	{"dkim.sender_map", func(c *config.Config) any { return c.DKIM.SenderMap }, func(d, s *config.Config) { d.DKIM.SenderMap = s.DKIM.SenderMap }},
	{"dmarc.pass_history", func(c *config.Config) any { return c.DMARC.PassHistory }, func(d, s *config.Config) { d.DMARC.PassHistory = s.DMARC.PassHistory }},
	{"authpolicy.listen", func(c *config.Config) any { return c.AuthPolicy.Listen }, func(d, s *config.Config) { d.AuthPolicy.Listen = s.AuthPolicy.Listen }},
	{"authpolicy.allow_remote", func(c *config.Config) any { return c.AuthPolicy.AllowRemote }, func(d, s *config.Config) { d.AuthPolicy.AllowRemote = s.AuthPolicy.AllowRemote }},
	{"authpolicy.tls_cert", func(c *config.Config) any { return c.AuthPolicy.TLSCert }, func(d, s *config.Config) { d.AuthPolicy.TLSCert = s.AuthPolicy.TLSCert }},
	{"authpolicy.tls_key", func(c *config.Config) any { return c.AuthPolicy.TLSKey }, func(d, s *config.Config) { d.AuthPolicy.TLSKey = s.AuthPolicy.TLSKey }},
	{"reports.record", func(c *config.Config) any { return c.Reports.Record }, func(d, s *config.Config) { d.Reports.Record = s.Reports.Record }},
	{"reports.queue", func(c *config.Config) any { return c.Reports.Queue }, func(d, s *config.Config) { d.Reports.Queue = s.Reports.Queue }},
	{"dmarc.pass_history_keep", func(c *config.Config) any { return c.DMARC.PassHistoryKeep }, func(d, s *config.Config) { d.DMARC.PassHistoryKeep = s.DMARC.PassHistoryKeep }},
	{"mtasts", func(c *config.Config) any { return c.MTASTS }, func(d, s *config.Config) { d.MTASTS = s.MTASTS }},
	{"web.listen", func(c *config.Config) any { return c.Web.Listen }, func(d, s *config.Config) { d.Web.Listen = s.Web.Listen }},
	{"web.allow_remote", func(c *config.Config) any { return c.Web.AllowRemote }, func(d, s *config.Config) { d.Web.AllowRemote = s.Web.AllowRemote }},
	{"web.tls_cert", func(c *config.Config) any { return c.Web.TLSCert }, func(d, s *config.Config) { d.Web.TLSCert = s.Web.TLSCert }},
	{"web.tls_key", func(c *config.Config) any { return c.Web.TLSKey }, func(d, s *config.Config) { d.Web.TLSKey = s.Web.TLSKey }},
}

// restartOnly lists the restart-only keys whose value differs between
// the running configuration and the file's.
func restartOnly(running, file *config.Config) []string {
	var out []string
	for _, k := range restartOnlyKeys {
		if fmt.Sprint(k.get(running)) != fmt.Sprint(k.get(file)) {
			out = append(out, k.key)
		}
	}
	return out
}

// keepRestartOnly sets next's restart-only keys to running's values.
func keepRestartOnly(next, running *config.Config) {
	for _, k := range restartOnlyKeys {
		k.keep(next, running)
	}
}

func (d *Daemon) reloadKeys() {
	if d.keyStore == nil || d.m == nil {
		return
	}
	set, err := d.keyStore.Load()
	if err != nil {
		kept := set.KeepFrom(d.m.Keys())
		d.log.Error("wehr: DKIM keys broken on reload; the domains loaded before keep their old keys",
			"kept", strings.Join(kept, ","), "broken_domains", brokenDomains(set), "error", err)
	}
	d.m.SetKeys(set)
	d.log.Info("wehr: DKIM keys loaded", "domains", len(set.Domains()))
}

// brokenDomains lists the domains of set whose keys are broken.
func brokenDomains(set *dkimkeys.Set) string {
	var out []string
	for d := range set.Broken() {
		out = append(out, d)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "all"
	}
	return strings.Join(out, ",")
}

// sendReports sends the DMARC aggregate reports of finished periods
// while reports.send is on: five minutes past every hour (the other
// nodes' last rows of a period are written by then), so a period is
// sent soon after it ends and what was deferred is tried again hourly.
// One node sends at a time (the store's lock); the others find it held.
func (d *Daemon) sendReports(ctx context.Context) {
	for {
		next := nextReportRun(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		cfg := d.Config()
		if !cfg.Reports.Send {
			continue
		}
		s := &dmarcreport.Sender{Config: cfg.Reports, Store: d.st, DNS: d.res, Hostname: cfg.Hostname, Log: d.log,
			Sign: dmarcreport.KeySigner(d.signingKeys), LocalLock: dmarcreport.LocalLockPath(cfg.Store.Path)}
		out, err := s.Run(ctx, time.Now().Add(-5*time.Minute))
		switch {
		case errors.Is(err, dmarcreport.ErrBusy):
			d.log.Info("wehr: dmarc reports: another node is sending this hour's reports")
		case err != nil:
			d.log.Error("wehr: dmarc reports: the run stopped; the rest is tried next hour", "error", err,
				"sent", out.Sent, "deferred", out.Deferred)
		case out.Reports > 0:
			d.log.Info("wehr: dmarc reports", "reports", out.Reports, "sent", out.Sent, "refused", out.Refused,
				"skipped", out.Skipped, "deferred", out.Deferred)
		}
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds (sd_notify wants it
// with RELOADING=1).
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

// notify tells systemd about the service's state (sd_notify); nothing
// when not run by systemd with Type=notify.
func notify(log *slog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		log.Warn("wehr: systemd notification failed", "state", state, "error", err)
	}
}

// readyz answers 200 when every daemon of the process listens and the
// store answers, else 503 with what is not (for load balancers and
// orchestration; /healthz only says the process runs).
func (d *Daemon) readyz(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if !d.ready.Load() {
		problems = append(problems, "starting or stopping")
	}
	if d.st != nil {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		err := d.st.Ping(ctx)
		cancel()
		if err != nil {
			problems = append(problems, "store: "+err.Error())
		}
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, strings.Join(problems, "\n")+"\n")
		return
	}
	io.WriteString(w, "ready\n")
}

// authListen is where the auth policy service listens ("": it does not).
func (d *Daemon) authListen() string {
	if d.opt.AuthPolicyListen != "" {
		return d.opt.AuthPolicyListen
	}
	return d.cfg.AuthPolicy.Listen
}

// nextReportRun is when the report sender runs next after now: five
// minutes past the next hour.
func nextReportRun(now time.Time) time.Time {
	h := now.Truncate(time.Hour)
	if now.Before(h.Add(5 * time.Minute)) {
		return h.Add(5 * time.Minute)
	}
	return h.Add(time.Hour + 5*time.Minute)
}

// signingKeys is the DKIM key set the milter signs with, or the key
// directory's when no milter runs here.
func (d *Daemon) signingKeys() *dkimkeys.Set {
	if d.m != nil {
		return d.m.Keys()
	}
	if dir := d.Config().DKIM.KeysDir; dir != "" {
		set, _ := (&dkimkeys.Store{Dir: dir}).Load()
		return set
	}
	return nil
}

// advance moves key rotations on, with dkim.rotation_overlap in effect.
func (d *Daemon) advance(ctx context.Context) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advanceLocked(ctx)
}

func (d *Daemon) advanceLocked(ctx context.Context) {
	if d.keyStore == nil || d.m == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	trs, err := d.keyStore.Advance(actx, d.res, d.cfg.DKIM.RotationOverlap, time.Now())
	for _, t := range trs {
		d.log.Info("wehr: DKIM key rotation", "domain", t.Domain, "selector", t.Selector, "from", t.From, "to", t.To, "why", t.Why)
	}
	if err != nil {
		d.log.Error("wehr: DKIM key rotation check failed", "error", err)
	}
	if len(trs) > 0 {
		d.reloadKeys()
	}
}
