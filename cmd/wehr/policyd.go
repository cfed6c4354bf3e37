package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/policyd"
	"github.com/wehr/wehr/sendermap"
	"github.com/wehr/wehr/store"
)

func newPolicydCmd(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "policyd [--listen ADDR]",
		Short: "Run the Postfix policy service alone (needs store.backend: redis)",
		Long: `Run the Postfix policy service alone (wehr serve runs it with the milter).
ADDR is inet:HOST:PORT or unix:/absolute/path (default: policyd.listen).
Run alone, it needs the Redis store: the embedded store belongs to wehr serve.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			return runDaemons(cmd.Context(), e, daemons{policyd: true, policydListen: listen})
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen address (overrides policyd.listen)")

	var client, helo, sender, rcpt, sasl, context string
	test := &cobra.Command{
		Use:   "test --client-address IP --helo NAME --sender A --recipient B [--sasl-username U]",
		Short: "Run one request through the policy pipeline, against the live store and DNS",
		Long: `Run one request through the policy pipeline, as Postfix would send it at RCPT,
against the live store (Redis, or the running wehr serve's embedded store)
and DNS, and print the decision with each check's contribution. Note that a
dry run counts: it records a greylist attempt and a rate event like a real
request.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := netip.ParseAddr(client); err != nil {
				return usagef("--client-address %q is not an IP address", client)
			}
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			pc := e.cfg.PolicydPipeline()
			if sm := e.cfg.DKIM.SenderMap; sm != "" && e.cfg.Policyd.Submission.SenderLogin {
				if pc.Submission.Senders, err = sendermap.NewHolder(sm); err != nil {
					return usageError{err}
				}
			}
			p := policyd.NewPipeline(pc, e.res, st, e.log)
			req := policyd.Request{"request": "smtpd_access_policy", "protocol_state": "RCPT", "client_address": client,
				"client_name": "unknown", "helo_name": helo, "sender": sender, "recipient": rcpt, "sasl_username": sasl,
				"policy_context": context, "instance": fmt.Sprintf("test.%d", time.Now().UnixNano())}
			d := p.Evaluate(cmd.Context(), req)
			if g.json {
				return json.NewEncoder(g.stdout).Encode(d)
			}
			fmt.Fprintf(g.stdout, "action: %s\n", d.Action)
			if d.Check != "" {
				fmt.Fprintf(g.stdout, "decided by: %s\n", d.Check)
			}
			fmt.Fprintf(g.stdout, "context: %s, score %g\n", d.Context, d.Score)
			for _, c := range d.Contributions {
				fmt.Fprintf(g.stdout, "  %-10s %+5g  %s\n", c.Check, c.Score, c.Note)
			}
			return nil
		},
	}
	f := test.Flags()
	f.StringVar(&client, "client-address", "", "client IP address (required)")
	f.StringVar(&helo, "helo", "", "HELO name")
	f.StringVar(&sender, "sender", "", "MAIL FROM address")
	f.StringVar(&rcpt, "recipient", "", "RCPT TO address")
	f.StringVar(&sasl, "sasl-username", "", "SASL user (makes it submission)")
	f.StringVar(&context, "policy-context", "", "policy_context (mx or submission)")
	test.MarkFlagRequired("client-address") //nolint:errcheck
	cmd.AddCommand(test)
	return cmd
}

func newGreylistCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "greylist", Short: "Show, allow or remove greylist entries in the store"}
	var limit int
	show := &cobra.Command{
		Use:   "show [PREFIX]",
		Short: "List greylist entries (optionally those starting with a network, e.g. 192.0.2.0/24)",
		Args:  func(_ *cobra.Command, args []string) error { return maxArgs(args, 1) },
		RunE: func(cmd *cobra.Command, args []string) error {
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			filter := ""
			if len(args) == 1 {
				filter = args[0]
			}
			grey := store.NewGreylists(st)
			entries, err := grey.Entries(cmd.Context(), filter, limit)
			if err != nil {
				return err
			}
			type network struct {
				Network     string `json:"network"`
				Passes      int64  `json:"passes"`
				Needed      int64  `json:"needed"`
				Allowlisted bool   `json:"allowlisted"`
			}
			out := struct {
				Entries  []string  `json:"entries"`
				Networks []network `json:"networks"`
			}{Entries: entries, Networks: []network{}}
			// Networks whose retries passed: allowlisted once they
			// reach policyd.greylist.allowlist_after.
			need := e.cfg.Policyd.Greylist.AllowlistAfter
			nets, err := grey.Networks(cmd.Context(), filter, limit)
			if err != nil {
				return err
			}
			for _, n := range nets {
				out.Networks = append(out.Networks, network{Network: n.Network, Passes: n.Passes, Needed: need, Allowlisted: n.Passes >= need})
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			for _, k := range out.Entries {
				fmt.Fprintln(g.stdout, k)
			}
			for _, n := range out.Networks {
				if n.Allowlisted {
					fmt.Fprintf(g.stdout, "network %s: allowlisted, not greylisted (%d passes, %d needed)\n", n.Network, n.Passes, n.Needed)
				} else {
					fmt.Fprintf(g.stdout, "network %s: still greylisted, %d of the %d passes that allowlist it\n", n.Network, n.Passes, n.Needed)
				}
			}
			return nil
		},
	}
	show.Flags().IntVar(&limit, "limit", 1000, "at most this many entries")
	allow := &cobra.Command{
		Use:   "allow NETWORK",
		Short: "Stop greylisting a client network (e.g. 192.0.2.0/24, as greylisting counts networks)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, ok := store.ParseNetwork(args[0])
			if !ok {
				return usagef("%q is not an IP address or network", args[0])
			}
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			if err := store.NewGreylists(st).Allow(cmd.Context(), p, e.cfg.Policyd.Greylist.Keep); err != nil {
				return err
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(map[string]any{"network": p.Masked().String(), "allowlisted": true})
			}
			fmt.Fprintf(g.stdout, "%s will not be greylisted\n", p.Masked())
			return nil
		},
	}
	remove := &cobra.Command{
		Use:   "remove ENTRY...",
		Short: "Remove greylist entries (as greylist show prints them) or allowed networks",
		Args:  func(_ *cobra.Command, args []string) error { return minArgs(args, 1) },
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			grey := store.NewGreylists(st)
			for _, a := range args {
				if err := grey.Remove(cmd.Context(), a); err != nil {
					return err
				}
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(map[string]any{"removed": args})
			}
			fmt.Fprintf(g.stdout, "removed %d\n", len(args))
			return nil
		},
	}
	cmd.AddCommand(show, allow, remove)
	return cmd
}

func newReputationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "reputation", Short: "Show what the store knows of a client"}
	cmd.AddCommand(&cobra.Command{
		Use:   "show IP",
		Short: "Show a client's reputation: refusals and passes",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(args[0])
			if err != nil {
				return usagef("%q is not an IP address", args[0])
			}
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			addr, network, err := store.NewReputation(st).Of(cmd.Context(), ip)
			if err != nil {
				return err
			}
			n := store.Network(ip).String()
			if g.json {
				return json.NewEncoder(g.stdout).Encode(map[string]any{"ip": ip.String(), "passed": addr.Passed, "refused": addr.Refused,
					"network": map[string]any{"network": n, "passed": network.Passed, "refused": network.Refused}})
			}
			fmt.Fprintf(g.stdout, "%s: passed %d, refused %d\nnetwork %s: passed %d, refused %d\n", ip, addr.Passed, addr.Refused, n, network.Passed, network.Refused)
			return nil
		},
	})
	return cmd
}

func maxArgs(args []string, n int) error {
	if len(args) > n {
		return usagef("at most %d arguments, got %d", n, len(args))
	}
	return nil
}

func minArgs(args []string, n int) error {
	if len(args) < n {
		return usagef("at least %d arguments", n)
	}
	return nil
}

// opsStore loads the config and opens the store for an ops command.
func (g *globals) opsStore() (*env, store.Store, error) {
	e, err := g.load()
	if err != nil {
		return nil, nil, err
	}
	st, err := opsStore(e)
	if err != nil {
		return nil, nil, err
	}
	return e, st, nil
}
