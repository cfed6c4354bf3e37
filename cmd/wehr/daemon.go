package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/milter"
)

func newMilterCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "milter [--listen ADDR]",
		Short: "Run the Postfix milter alone",
		Long: `Run the Postfix milter alone (wehr serve runs it with every other daemon).
ADDR is inet:HOST:PORT or unix:/absolute/path (default: milter.listen).
Stops on SIGTERM or SIGINT, letting messages in progress finish.`,
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
service manager runs. Stops on SIGTERM or SIGINT.`,
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
	ln, err := milter.Listen(addr, perms)
	if err != nil {
		return err
	}
	engine := mailauth.NewEngine(e.res, e.cfg.Engine())
	m := milter.New(engine, e.cfg.MilterServer(), e.log)
	e.log.Info("wehr: milter listening", slog.String("listen", addr.String()), slog.String("authserv_id", e.cfg.AuthservID),
		slog.Any("dns_servers", e.res.Servers()), slog.String("dmarc_refusal", e.cfg.DMARC.Refusal))

	grp, ctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return m.Serve(ctx, ln) })
	err = grp.Wait()
	e.log.Info("wehr: stopped", slog.Uint64("milter_sessions", m.Sessions()))
	if err != nil {
		return fmt.Errorf("milter: %w", err)
	}
	return nil
}
