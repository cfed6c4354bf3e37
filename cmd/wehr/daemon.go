package main

import (
	"context"
	"fmt"
	"github.com/wehr/wehr/listener"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/mailauth"
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

// runDaemons starts the daemons and runs them until ctx ends.
func runDaemons(ctx context.Context, e *env, d daemons) error {
	grp, ctx := errgroup.WithContext(ctx)
	var st store.Store
	if d.policyd || e.cfg.Store.Backend == "redis" {
		var err error
		if st, err = openStore(e, d.milter && d.policyd); err != nil {
			return err
		}
		defer st.Close()
		if emb, ok := st.(*store.Embedded); ok {
			grp.Go(func() error { return store.ServeAdmin(ctx, emb, e.cfg.Store.AdminSocket, e.log) })
			e.log.Info("wehr: embedded store", "path", e.cfg.Store.Path, "admin_socket", e.cfg.Store.AdminSocket)
		} else {
			e.log.Info("wehr: Redis store", "mode", e.cfg.Store.Redis.Mode, "addrs", e.cfg.Store.Redis.Addrs)
		}
	}
	var senders *sendermap.Holder
	if p := e.cfg.DKIM.SenderMap; p != "" {
		var err error
		if senders, err = sendermap.NewHolder(p); err != nil {
			return usageError{err}
		}
	}
	if d.policyd {
		addr, err := e.cfg.PolicydListen(d.policydListen)
		if err != nil {
			return usagef("%v", err)
		}
		ln, err := listener.Listen(addr, listener.SocketPerms{})
		if err != nil {
			return err
		}
		pc := e.cfg.PolicydPipeline()
		if e.cfg.Policyd.Submission.SenderLogin {
			pc.Submission.Senders = senders
		}
		p := policyd.NewPipeline(pc, e.res, st, e.log)
		srv := policyd.NewServer(p, e.log, e.cfg.Policyd.IdleTimeout)
		e.log.Info("wehr: policy service listening", "listen", addr.String(), "dns_lists", len(e.cfg.Policyd.DNSLists),
			"greylisting", e.cfg.Policyd.Greylist.Enabled)
		grp.Go(func() error { return srv.Serve(ctx, ln) })
	}
	if !d.milter {
		grp.Go(func() error {
			maintain(ctx, e, nil, senders, nil)
			return nil
		})
		return grp.Wait()
	}
	addr, perms, err := e.cfg.MilterListen(d.milterListen)
	if err != nil {
		return usagef("%v", err)
	}
	mc := e.cfg.MilterServer()
	var store *dkimkeys.Store
	if dir := e.cfg.DKIM.KeysDir; dir != "" {
		store = &dkimkeys.Store{Dir: dir}
		if mc.Keys, err = store.Load(); err != nil {
			return usageError{err}
		}
	}
	mc.Senders = senders
	if mc.Keys != nil && mc.Senders == nil {
		e.log.Warn("wehr: dkim.keys_dir is set but dkim.sender_map is not: nothing will be signed")
	}
	ln, err := listener.Listen(addr, perms)
	if err != nil {
		return err
	}
	ecfg := e.cfg.Engine()
	if st != nil && e.cfg.DMARC.PassHistory {
		h := milter.NewHistory(st, e.cfg.DMARC.PassHistoryKeep)
		ecfg.History, mc.History = h, h
	}
	engine := mailauth.NewEngine(e.res, ecfg)
	m := milter.New(engine, mc, e.log)
	e.log.Info("wehr: milter listening", slog.String("listen", addr.String()), slog.String("authserv_id", e.cfg.AuthservID),
		slog.Any("dns_servers", e.res.Servers()), slog.String("dmarc_refusal", e.cfg.DMARC.Refusal),
		slog.Int("dkim_domains", domains(mc.Keys)), slog.Bool("sender_map", mc.Senders != nil))

	grp.Go(func() error { return m.Serve(ctx, ln) })
	grp.Go(func() error {
		maintain(ctx, e, store, mc.Senders, m)
		return nil
	})
	err = grp.Wait()
	e.log.Info("wehr: stopped", slog.Uint64("milter_sessions", m.Sessions()))
	if err != nil {
		return fmt.Errorf("milter: %w", err)
	}
	return nil
}

func domains(s *dkimkeys.Set) int {
	if s == nil {
		return 0
	}
	return len(s.Domains())
}

// maintain reloads keys and the sender map on SIGHUP, and advances key
// rotations on a schedule; a failed reload keeps what was loaded.
func maintain(ctx context.Context, e *env, store *dkimkeys.Store, senders *sendermap.Holder, m *milter.Server) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(e.cfg.DKIM.RotationCheck)
	defer tick.Stop()
	reloadKeys := func() {
		if store == nil || m == nil {
			return
		}
		set, err := store.Load()
		if err != nil {
			e.log.Error("wehr: DKIM keys not reloaded, keeping the old ones", "error", err)
			return
		}
		m.SetKeys(set)
		e.log.Info("wehr: DKIM keys loaded", "domains", len(set.Domains()))
	}
	advance := func() {
		if store == nil || m == nil {
			return
		}
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		trs, err := store.Advance(actx, e.res, e.cfg.DKIM.RotationOverlap, time.Now())
		for _, t := range trs {
			e.log.Info("wehr: DKIM key rotation", "domain", t.Domain, "selector", t.Selector, "from", t.From, "to", t.To, "why", t.Why)
		}
		if err != nil {
			e.log.Error("wehr: DKIM key rotation check failed", "error", err)
		}
		if len(trs) > 0 {
			reloadKeys()
		}
	}
	advance()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			e.log.Info("wehr: SIGHUP: reloading DKIM keys and the sender map")
			reloadKeys()
			if senders != nil {
				if err := senders.Reload(); err != nil {
					e.log.Error("wehr: sender map not reloaded, keeping the old one", "error", err)
				} else {
					e.log.Info("wehr: sender map loaded", "path", senders.Path(), "entries", senders.Map().Size)
				}
			}
			advance()
		case <-tick.C:
			advance()
		}
	}
}
