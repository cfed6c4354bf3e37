package main

import (
	"context"
	"encoding/json"
	"fmt"

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
				return usagef("mtasts.listen is not set")
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
			pool, err := e.cfg.MTASTS.RootCAs()
			if err != nil {
				return usagef("mtasts.ca_file: %v", err)
			}
			var cache mtasts.Cache = memCache{}
			if !noCache {
				st, err := opsStore(e)
				if err != nil {
					return fmt.Errorf("the policy cache: %w (or pass --no-cache)", err)
				}
				defer st.Close()
				cache = mtasts.StoreCache{P: store.NewStsPolicies(st)}
			}
			r := &mtasts.Resolver{DNS: e.res, Fetcher: &mtasts.Fetcher{RootCAs: pool, Timeout: e.cfg.MTASTS.FetchTimeout, Dial: mtasts.DialVia(e.res)}, Cache: cache}
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
	cmd.AddCommand(query)
	return cmd
}

// memCache is a cache for one query.
type memCache map[string]mtasts.Cached

func (m memCache) Get(_ context.Context, d string) (mtasts.Cached, bool, error) {
	c, ok := m[d]
	return c, ok, nil
}

func (m memCache) Put(_ context.Context, d string, c mtasts.Cached) error { m[d] = c; return nil }
