package main

import (
	"context"
	"fmt"
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
	"github.com/wehr/wehr/sendermap"
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
			return runDaemons(cmd.Context(), e, listen)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen address, inet:HOST:PORT or unix:/path (overrides milter.listen)")
	return cmd
}

func newServeCmd(g *globals) *cobra.Command {
	var milterListen string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run every wehr daemon in one process (for now: the milter)",
		Long: `Run every wehr daemon in one process: the Postfix milter (the policy daemon
and the DMARC reporter join it as they are built). This is the command a
service manager runs. SIGHUP reloads the DKIM keys and the sender map; key
rotations advance every dkim.rotation_check. Stops on SIGTERM or SIGINT.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			return runDaemons(cmd.Context(), e, milterListen)
		},
	}
	cmd.Flags().StringVar(&milterListen, "milter-listen", "", "milter listen address (overrides milter.listen)")
	return cmd
}

// runDaemons starts the daemons and runs them until ctx ends.
func runDaemons(ctx context.Context, e *env, milterListen string) error {
	addr, perms, err := e.cfg.MilterListen(milterListen)
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
	if p := e.cfg.DKIM.SenderMap; p != "" {
		if mc.Senders, err = sendermap.NewHolder(p); err != nil {
			return usageError{err}
		}
	}
	if mc.Keys != nil && mc.Senders == nil {
		e.log.Warn("wehr: dkim.keys_dir is set but dkim.sender_map is not: nothing will be signed")
	}
	ln, err := milter.Listen(addr, perms)
	if err != nil {
		return err
	}
	engine := mailauth.NewEngine(e.res, e.cfg.Engine())
	m := milter.New(engine, mc, e.log)
	e.log.Info("wehr: milter listening", slog.String("listen", addr.String()), slog.String("authserv_id", e.cfg.AuthservID),
		slog.Any("dns_servers", e.res.Servers()), slog.String("dmarc_refusal", e.cfg.DMARC.Refusal),
		slog.Int("dkim_domains", domains(mc.Keys)), slog.Bool("sender_map", mc.Senders != nil))

	grp, ctx := errgroup.WithContext(ctx)
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
		if store == nil {
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
		if store == nil {
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
