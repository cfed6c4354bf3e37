package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wehr/wehr/config"
	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/metrics"
	"github.com/wehr/wehr/milter"
	"github.com/wehr/wehr/policyd"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/store"
)

func newMilterCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "milter [--listen ADDR]",
		Short: "Run the Postfix milter alone",
		Long: `Run the Postfix milter alone (wehr serve runs it with every other daemon).
ADDR is inet:HOST:PORT or unix:/absolute/path (default: milter.listen).
SIGHUP reloads the DKIM keys and the sender map; SIGTERM or SIGINT stops it,
letting messages in progress finish.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			return runDaemons(cmd.Context(), e, daemons{milter: true, milterListen: listen})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen address, inet:HOST:PORT or unix:/path (overrides milter.listen)")
	return cmd
}

func newServeCmd(g *globals) *cobra.Command {
	var milterListen, policydListen string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run every wehr daemon in one process: the milter and the policy service",
		Long: `Run every wehr daemon in one process: the Postfix milter and the policy
service (the DMARC reporter joins them later). This is the command a service
manager runs. With the embedded store it owns the store file and serves ops
commands on store.admin_socket. SIGHUP reloads the DKIM keys and the sender
map; key rotations advance every dkim.rotation_check. Stops on SIGTERM or
SIGINT.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			return runDaemons(cmd.Context(), e, daemons{milter: true, policyd: true, milterListen: milterListen, policydListen: policydListen})
		},
	}
	cmd.Flags().StringVar(&milterListen, "milter-listen", "", "milter listen address (overrides milter.listen)")
	cmd.Flags().StringVar(&policydListen, "policyd-listen", "", "policy service listen address (overrides policyd.listen)")
	return cmd
}

// daemons says which daemons a process runs.
type daemons struct {
	milter, policyd             bool
	milterListen, policydListen string
}

// openStore opens the configured store for a daemon process: the
// embedded file (only wehr serve may: one owner), or Redis.
func openStore(e *env, owner bool) (store.Store, error) {
	if e.cfg.Store.Backend == "redis" {
		return store.OpenRedis(e.cfg.RedisStore())
	}
	if !owner {
		return nil, usagef("the embedded store belongs to wehr serve: run wehr serve, or set store.backend: redis to run the daemons as separate processes")
	}
	return store.OpenEmbedded(e.cfg.Store.Path)
}

// opsStore opens the store for an ops command: Redis directly, or the
// running wehr serve's admin socket for the embedded store.
func opsStore(e *env) (store.Store, error) {
	if e.cfg.Store.Backend == "redis" {
		return store.OpenRedis(e.cfg.RedisStore())
	}
	return store.DialAdmin(e.cfg.Store.AdminSocket)
}

// running is what a daemon process runs, and what a reload replaces.
type running struct {
	e        *env
	st       store.Store
	senders  *sendermap.Holder
	keyStore *dkimkeys.Store
	history  *store.PassHistory
	m        *milter.Server  // nil without the milter
	pd       *policyd.Server // nil without the policy service
	metrics  *metrics.Metrics
}

// engine builds the verdict engine of cfg.
func (r *running) engine(cfg *config.Config) *mailauth.Engine {
	ecfg := cfg.Engine()
	if r.history != nil {
		ecfg.History = r.history
	}
	return mailauth.NewEngine(r.e.res, ecfg)
}

// milterConfig builds the milter's configuration of cfg (keys are set
// apart).
func (r *running) milterConfig(cfg *config.Config) milter.Config {
	mc := cfg.MilterServer()
	mc.Senders, mc.History, mc.Observer = r.senders, r.history, r.metrics
	return mc
}

// pipeline builds the policy pipeline of cfg.
func (r *running) pipeline(cfg *config.Config) *policyd.Pipeline {
	pc := cfg.PolicydPipeline()
	pc.Observer = r.metrics
	if cfg.Policyd.Submission.SenderLogin {
		pc.Submission.Senders = r.senders
	}
	return policyd.NewPipeline(pc, r.e.res, r.st, r.e.log)
}

// runDaemons starts the daemons and runs them until ctx ends.
func runDaemons(ctx context.Context, e *env, d daemons) error {
	grp, ctx := errgroup.WithContext(ctx)
	r := &running{e: e, metrics: metrics.New(e.res)}
	if d.policyd || e.cfg.Store.Backend == "redis" {
		var err error
		if r.st, err = openStore(e, d.milter && d.policyd); err != nil {
			var ue usageError
			if errors.As(err, &ue) || errors.Is(err, store.ErrInUse) {
				return err
			}
			// A store that cannot be opened (a read-only file system)
			// must not stop inbound mail: the checks that need it take
			// their store-down fallback. wehr doctor says FAIL.
			e.log.Error("wehr: the store cannot be opened; running without it: greylisting, rates, reputation and pass history "+
				"take their store-down fallback (policyd.on_store_error) until it is fixed and wehr restarted",
				"backend", e.cfg.Store.Backend, "error", err)
			r.st = store.Down{Err: err}
		}
		defer r.st.Close()
		if emb, ok := r.st.(*store.Embedded); ok && emb != nil {
			if emb.Moved != "" {
				e.log.Error("wehr: the embedded store was damaged and has been moved aside; starting with an empty one (greylisting, rates, reputation and pass history start over)",
					"path", e.cfg.Store.Path, "moved_to", emb.Moved, "error", emb.MovedWhy)
			}
			grp.Go(func() error { return store.ServeAdmin(ctx, emb, e.cfg.Store.AdminSocket, e.log) })
			e.log.Info("wehr: embedded store", "path", e.cfg.Store.Path, "admin_socket", e.cfg.Store.AdminSocket)
		} else if e.cfg.Store.Backend == "redis" {
			e.log.Info("wehr: Redis store", "mode", e.cfg.Store.Redis.Mode, "addrs", e.cfg.Store.Redis.Addrs)
		}
		if e.cfg.DMARC.PassHistory {
			r.history = store.NewPassHistory(r.st, e.cfg.DMARC.PassHistoryKeep)
		}
	}
	if l := e.cfg.Metrics.Listen; l != "" {
		a, err := listener.ParseAddress(l, e.cfg.Metrics.AllowRemote)
		if err != nil {
			return usagef("metrics.listen: %v", err)
		}
		ln, err := listener.Listen(a, listener.SocketPerms{})
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", r.metrics.Handler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		grp.Go(func() error {
			go func() { <-ctx.Done(); hs.Close() }()
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics: %w", err)
			}
			return nil
		})
		e.log.Info("wehr: metrics at http://" + a.Address + "/metrics")
	}
	if p := e.cfg.DKIM.SenderMap; p != "" {
		var err error
		if r.senders, err = sendermap.NewHolder(p); err != nil {
			return usageError{err}
		}
	}
	if d.policyd {
		addr, perms, err := e.cfg.PolicydListen(d.policydListen)
		if err != nil {
			return usagef("%v", err)
		}
		if addr.Network == "unix" {
			if err := config.CheckSocketOwner("policyd", perms); err != nil {
				return usageError{err}
			}
		}
		ln, err := listener.Listen(addr, perms)
		if err != nil {
			return err
		}
		r.pd = policyd.NewServer(r.pipeline(e.cfg), e.log, e.cfg.Policyd.IdleTimeout)
		r.pd.MaxConnections = e.cfg.Policyd.MaxConnections
		e.log.Info("wehr: policy service listening", "listen", addr.String(), "dns_lists", len(e.cfg.Policyd.DNSLists),
			"greylisting", e.cfg.Policyd.Greylist.Enabled)
		grp.Go(func() error { return r.pd.Serve(ctx, ln) })
	}
	if d.milter {
		addr, perms, err := e.cfg.MilterListen(d.milterListen)
		if err != nil {
			return usagef("%v", err)
		}
		if addr.Network == "unix" {
			if err := config.CheckSocketOwner("milter", perms); err != nil {
				return usageError{err}
			}
		}
		mc := r.milterConfig(e.cfg)
		if dir := e.cfg.DKIM.KeysDir; dir != "" {
			r.keyStore = &dkimkeys.Store{Dir: dir}
			// One broken key file must not stop inbound mail: the
			// domain it belongs to is broken (dkim.on_key_error), the
			// others sign. wehr doctor says FAIL.
			if mc.Keys, err = r.keyStore.Load(); err != nil {
				e.log.Error("wehr: DKIM keys broken; starting without them: outbound mail of these domains gets dkim.on_key_error="+e.cfg.DKIM.OnKeyError,
					"broken_domains", brokenDomains(mc.Keys), "error", err)
			}
		}
		if mc.Keys != nil && mc.Senders == nil {
			e.log.Warn("wehr: dkim.keys_dir is set but dkim.sender_map is not: nothing will be signed")
		}
		ln, err := listener.Listen(addr, perms)
		if err != nil {
			return err
		}
		r.m = milter.New(r.engine(e.cfg), mc, e.log)
		e.log.Info("wehr: milter listening", slog.String("listen", addr.String()), slog.String("authserv_id", e.cfg.AuthservID),
			slog.Any("dns_servers", e.res.Servers()), slog.String("dmarc_refusal", e.cfg.DMARC.Refusal),
			slog.Int("dkim_domains", domains(mc.Keys)), slog.Bool("sender_map", mc.Senders != nil))
		grp.Go(func() error { return r.m.Serve(ctx, ln) })
	}
	grp.Go(func() error {
		r.maintain(ctx)
		return nil
	})
	err := grp.Wait()
	if r.m != nil {
		e.log.Info("wehr: stopped", slog.Uint64("milter_sessions", r.m.Sessions()))
	} else {
		e.log.Info("wehr: stopped")
	}
	return err
}

func domains(s *dkimkeys.Set) int {
	if s == nil {
		return 0
	}
	return len(s.Domains())
}

// maintain reloads on SIGHUP (the configuration, the DKIM keys, the
// sender map) and advances key rotations on a schedule; whatever fails to
// reload keeps what was loaded, with a log line.
func (r *running) maintain(ctx context.Context) {
	e := r.e
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(e.cfg.DKIM.RotationCheck)
	defer tick.Stop()
	r.advance(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			e.log.Info("wehr: SIGHUP: reloading the configuration, DKIM keys and the sender map")
			r.reloadConfig()
			r.reloadKeys()
			if r.senders != nil {
				if err := r.senders.Reload(); err != nil {
					e.log.Error("wehr: sender map not reloaded, keeping the old one", "error", err)
				} else {
					e.log.Info("wehr: sender map loaded", "path", r.senders.Path(), "entries", r.senders.Map().Size)
				}
			}
			r.advance(ctx)
		case <-tick.C:
			r.advance(ctx)
		}
	}
}

// reloadConfig reads the config file again; if it is valid, the engine,
// the milter's settings and the policy pipeline take it up. Settings
// that need a restart (listen addresses, the store, DNS servers) are
// named in the log.
func (r *running) reloadConfig() {
	e := r.e
	if e.path == "" {
		e.log.Info("wehr: running on built-in defaults; no config file to reload")
		return
	}
	cfg, err := config.Load(e.path)
	if err != nil {
		var ce *config.Errors
		if errors.As(err, &ce) {
			for _, l := range ce.Lines() {
				e.log.Error("wehr: config not reloaded: " + l)
			}
		} else {
			e.log.Error("wehr: config not reloaded", "error", err)
		}
		return
	}
	for _, c := range restartOnly(e.cfg, cfg) {
		e.log.Warn("wehr: config change needs a restart to take effect", "key", c)
	}
	if r.m != nil {
		r.m.Reload(r.engine(cfg), r.milterConfig(cfg))
	}
	if r.pd != nil {
		r.pd.SetPipeline(r.pipeline(cfg))
	}
	e.log.Info("wehr: configuration reloaded", "path", e.path)
}

// restartOnly lists the keys whose change a reload does not apply.
func restartOnly(old, cur *config.Config) []string {
	var out []string
	check := func(key string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, key)
		}
	}
	check("milter.listen", old.Milter.Listen, cur.Milter.Listen)
	check("policyd.listen", old.Policyd.Listen, cur.Policyd.Listen)
	check("store", old.Store, cur.Store)
	check("dns", old.DNS, cur.DNS)
	check("log", old.Log, cur.Log)
	check("dkim.keys_dir", old.DKIM.KeysDir, cur.DKIM.KeysDir)
	check("dkim.sender_map", old.DKIM.SenderMap, cur.DKIM.SenderMap)
	check("dmarc.pass_history", old.DMARC.PassHistory, cur.DMARC.PassHistory)
	return out
}

func (r *running) reloadKeys() {
	if r.keyStore == nil || r.m == nil {
		return
	}
	set, err := r.keyStore.Load()
	if err != nil {
		kept := set.KeepFrom(r.m.Keys())
		r.e.log.Error("wehr: DKIM keys broken on reload; the domains loaded before keep their old keys",
			"kept", strings.Join(kept, ","), "broken_domains", brokenDomains(set), "error", err)
	}
	r.m.SetKeys(set)
	r.e.log.Info("wehr: DKIM keys loaded", "domains", len(set.Domains()))
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

func (r *running) advance(ctx context.Context) {
	if r.keyStore == nil || r.m == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	trs, err := r.keyStore.Advance(actx, r.e.res, r.e.cfg.DKIM.RotationOverlap, time.Now())
	for _, t := range trs {
		r.e.log.Info("wehr: DKIM key rotation", "domain", t.Domain, "selector", t.Selector, "from", t.From, "to", t.To, "why", t.Why)
	}
	if err != nil {
		r.e.log.Error("wehr: DKIM key rotation check failed", "error", err)
	}
	if len(trs) > 0 {
		r.reloadKeys()
	}
}
