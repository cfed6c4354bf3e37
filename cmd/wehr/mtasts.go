package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/mtasts"
	"github.com/wehr/wehr/store"
)

func newMTASTSCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mtasts",
		Short: "Run the MTA-STS policy service alone (needs Redis); query a domain's policy",
		Long: `Run the MTA-STS policy service Postfix's smtp_tls_policy_maps asks, alone
(wehr serve runs it when mtasts.listen is set). Run alone it needs
store.backend: redis, where the policies are cached for every node.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			if e.cfg.MTASTS.Listen == "" {
				return usagef("mtasts.listen is not set: set it (inet:127.0.0.1:10047) and point smtp_tls_policy_maps = socketmap:inet:127.0.0.1:10047:postfix at it")
			}
			return runDaemons(cmd.Context(), e, daemons{mtasts: true})
		},
	}
	var noCache bool
	query := &cobra.Command{
		Use:   "query DOMAIN",
		Short: "What Postfix would be told for mail to DOMAIN, and why",
		Long: `Look up DOMAIN's MTA-STS policy as the policy service does (its _mta-sts TXT
record, the cached policy, the policy file over HTTPS) and print what Postfix
would be told, with the cause of any failure. A fetched policy is cached like
the service's, unless --no-cache.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			var cache mtasts.Cache = mtasts.MemCache{}
			if !noCache {
				st, err := opsStore(e)
				if err != nil {
					return fmt.Errorf("the policy cache: %w (or pass --no-cache)", err)
				}
				defer st.Close()
				cache = mtasts.StoreCache{P: store.NewStsPolicies(st)}
			}
			r, err := mtasts.NewResolver(e.cfg.MTASTS, e.res, cache)
			if err != nil {
				return usageError{err}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), e.cfg.MTASTS.LookupTimeout)
			defer cancel()
			res := r.Lookup(ctx, args[0])
			if g.json {
				answer, found := res.Postfix()
				errText := ""
				if res.Err != nil {
					errText = res.Err.Error()
				}
				return json.NewEncoder(g.stdout).Encode(struct {
					mtasts.Result
					Err    string `json:"error,omitempty"`
					Answer string `json:"answer"`
					Found  bool   `json:"found"`
				}{res, errText, answer, found})
			}
			for _, l := range res.Explain() {
				fmt.Fprintln(g.stdout, l)
			}
			return nil
		},
	}
	query.Flags().BoolVar(&noCache, "no-cache", false, "neither read nor write the policy cache")
	var mode string
	var mx []string
	var maxAge time.Duration
	record := &cobra.Command{
		Use:   "record DOMAIN --mode testing|enforce --mx PATTERN...",
		Short: "The _mta-sts TXT record and the policy file to publish for DOMAIN",
		Long: `Print the _mta-sts TXT record to publish for DOMAIN and the policy file to serve
at https://mta-sts.DOMAIN/.well-known/mta-sts.txt (as text/plain, with a
certificate valid for mta-sts.DOMAIN). The record's id is taken from the
policy's text: it changes exactly when the policy does, which is what tells
senders to fetch it again. Start with --mode testing and TLS reports
(wehr tlsrpt record), then enforce.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if mode != string(mtasts.Testing) && mode != string(mtasts.Enforce) && mode != string(mtasts.None) {
				return usagef("--mode %q: testing, enforce or none", mode)
			}
			if len(mx) == 0 && mode != string(mtasts.None) {
				return usagef("--mx: name your MX hosts (mx.example.net, or *.example.net for any one label below it)")
			}
			if maxAge <= 0 || maxAge > mtasts.MaxMaxAge {
				return usagef("--max-age %v: more than 0, at most %v", maxAge, mtasts.MaxMaxAge)
			}
			// As mtasts.serve serves it: parsed (names lower-cased), then
			// written, so that the ids agree.
			file, _ := mtasts.Publish(mtasts.Policy{Mode: mtasts.Mode(mode), MaxAge: maxAge.Truncate(time.Second), MX: mx})
			pol, err := mtasts.ParsePolicy([]byte(file))
			if err != nil {
				return usagef("%v", err)
			}
			file, rec := mtasts.Publish(pol)
			domain := strings.TrimSuffix(args[0], ".")
			fmt.Fprintf(g.stdout, "; in the DNS zone of %s:\n_mta-sts.%s. IN TXT %q\n", domain, domain, rec)
			fmt.Fprintf(g.stdout, "; at https://mta-sts.%s/.well-known/mta-sts.txt (text/plain):\n%s", domain, strings.ReplaceAll(file, "\r\n", "\n"))
			return nil
		},
	}
	record.Flags().StringVar(&mode, "mode", "testing", "testing, enforce or none")
	record.Flags().StringSliceVar(&mx, "mx", nil, "an MX host name or *.domain pattern (repeat or comma-separate)")
	record.Flags().DurationVar(&maxAge, "max-age", 7*24*time.Hour, "how long senders keep the policy")
	cmd.AddCommand(query, record)
	return cmd
}
