package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/authpolicy"
	"github.com/wehr/wehr/store"
)

func newAuthPolicyCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "authpolicy [--listen ADDR]",
		Short: "Run Dovecot's auth policy service alone (needs Redis); show or reset an address or a login",
		Long: `Run Dovecot's auth policy service alone (wehr serve runs it when
authpolicy.listen is set). It needs store.backend: redis, so that every node
counts the same failed logins. ADDR is inet:HOST:PORT (default:
authpolicy.listen). Dovecot's side is in the README.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			if listen == "" && e.cfg.AuthPolicy.Listen == "" {
				return usagef("authpolicy.listen is not set: set it, or pass --listen inet:127.0.0.1:PORT")
			}
			return runDaemons(cmd.Context(), e, daemons{authpolicy: true, authListen: listen})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen address, inet:HOST:PORT (overrides authpolicy.listen)")
	// target reads IP|USER: an address, or a login name (hashed).
	target := func(e *env, arg string) (netip.Addr, string) {
		if a, err := netip.ParseAddr(arg); err == nil {
			return a.Unmap(), ""
		}
		return netip.Addr{}, authpolicy.HashLogin(e.cfg.AuthPolicy.LoginHashKey, arg)
	}
	show := &cobra.Command{
		Use:   "show IP|LOGIN",
		Short: "Failed logins counted, blocks, and a login's known networks",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			a, login := target(e, args[0])
			af := store.NewAuthFailures(st)
			ctx := cmd.Context()
			c, err := af.Counts(ctx, a, login, time.Now(), e.cfg.AuthPolicy.Window)
			if err != nil {
				return err
			}
			out := struct {
				Target string            `json:"target"`
				Hash   string            `json:"login_hash,omitempty"`
				Window string            `json:"window"`
				Counts store.AuthCounts  `json:"counts"`
				Blocks []store.AuthBlock `json:"blocks"`
				Known  []string          `json:"known_networks,omitempty"`
			}{Target: args[0], Hash: login, Window: e.cfg.AuthPolicy.Window.String(), Counts: c, Blocks: []store.AuthBlock{}}
			for kind, id := range store.BlockIDs(a, login) {
				b, ok, err := af.Blocked(ctx, kind, id)
				if err != nil {
					return err
				}
				if ok {
					out.Blocks = append(out.Blocks, b)
				}
			}
			if login != "" {
				if out.Known, err = af.KnownNetworks(ctx, login); err != nil {
					return err
				}
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			w := g.stdout
			if a.IsValid() {
				fmt.Fprintf(w, "%s: %d failed logins in %s, %d from its network %s, %d login names failing\n",
					a, max(c.IP, 0), out.Window, max(c.Net, 0), store.Network(a), max(c.Spray, 0))
			} else {
				fmt.Fprintf(w, "login %s (stored as %s): %d failed logins from anywhere in %s\n", args[0], login, max(c.Login, 0), out.Window)
				fmt.Fprintf(w, "known networks: %s\n", strings.Join(out.Known, ", "))
			}
			for _, b := range out.Blocks {
				fmt.Fprintf(w, "blocked (%s) until %s: %s\n", b.Kind, b.Until.Local().Format(time.RFC3339), b.Reason)
			}
			if len(out.Blocks) == 0 {
				fmt.Fprintln(w, "not blocked")
			}
			return nil
		},
	}
	reset := &cobra.Command{
		Use:   "reset IP|LOGIN",
		Short: "Forget an address's or a login's failed logins and blocks (a customer locked out)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			a, login := target(e, args[0])
			if err := store.NewAuthFailures(st).Reset(cmd.Context(), a, login, time.Now(), e.cfg.AuthPolicy.Window); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: failed logins and blocks forgotten\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(show, reset)
	return cmd
}
