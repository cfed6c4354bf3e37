package main

import (
	"context"
	"errors"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/daemon"
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
service, the DMARC report sender (reports.send) and, when authpolicy.listen is
set, Dovecot's auth policy service. This is the command a service
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
			return runDaemons(cmd.Context(), e, daemons{milter: true, policyd: true, authpolicy: true, mtasts: true, web: true, milterListen: milterListen, policydListen: policydListen})
		},
	}
	cmd.Flags().StringVar(&milterListen, "milter-listen", "", "milter listen address (overrides milter.listen)")
	cmd.Flags().StringVar(&policydListen, "policyd-listen", "", "policy service listen address (overrides policyd.listen)")
	return cmd
}

// daemons says which daemons a process runs.
type daemons struct {
	milter, policyd, authpolicy, mtasts, web bool
	milterListen, policydListen, authListen  string
}

// runDaemons runs the daemons until ctx ends; a setup that cannot work
// is a usage error (exit status 2).
func runDaemons(ctx context.Context, e *env, d daemons) error {
	err := daemon.Run(ctx, daemon.Options{Config: e.cfg, Path: e.path, Log: e.log, Resolver: e.res,
		Milter: d.milter, Policyd: d.policyd, MilterListen: d.milterListen, PolicydListen: d.policydListen,
		AuthPolicy: d.authpolicy, AuthPolicyListen: d.authListen, MTASTS: d.mtasts, Web: d.web})
	var se daemon.SetupError
	if errors.As(err, &se) {
		return usageError{se.Err}
	}
	return err
}

// opsStore opens the store for an ops command: Redis directly, or the
// running wehr serve's admin socket for the embedded store.
func opsStore(e *env) (store.Store, error) {
	if e.cfg.Store.Backend == "redis" {
		return store.OpenRedis(e.cfg.Store.Redis)
	}
	return store.DialAdmin(e.cfg.Store.AdminSocket)
}
