package main

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/mailauth"
)

func newCheckCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Authenticate a message or an identity from the command line",
	}
	cmd.AddCommand(newCheckSPFCmd(g))
	return cmd
}

func newCheckSPFCmd(g *globals) *cobra.Command {
	var ipStr, helo, mailFrom, scope string
	cmd := &cobra.Command{
		Use:   "spf --ip IP --helo NAME --mail-from ADDR",
		Short: "Evaluate SPF (RFC 7208) for a client IP, HELO name and MAIL FROM",
		Long: `Evaluate SPF (RFC 7208) for the MAIL FROM identity, as the milter does.
For the null sender (--mail-from '' or '<>') the identity is postmaster@<HELO>.
With --scope helo, the HELO identity is checked instead (RFC 7208 2.3).

With --json, prints exactly one object:
  {"result": "pass|fail|softfail|neutral|none|temperror|permerror",
   "scope": "mfrom|helo", "domain": "...", "explanation": "...", "error": "..."}
explanation is set only on fail, error only on temperror and permerror.
The exit status is 0 whatever the result.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ip := net.ParseIP(ipStr)
			if ip == nil {
				return usagef("--ip %q is not an IP address", ipStr)
			}
			if scope != mailauth.ScopeMailFrom && scope != mailauth.ScopeHelo {
				return usagef("--scope %q: want mfrom or helo", scope)
			}
			null := strings.TrimSpace(mailFrom) == "" || strings.TrimSpace(mailFrom) == "<>"
			if helo == "" && (null || scope == mailauth.ScopeHelo) {
				return usagef("--helo is needed for the null sender and for --scope helo")
			}
			e, err := g.load()
			if err != nil {
				return err
			}
			c := mailauth.NewSPFChecker(e.res, e.cfg.SPFChecker())
			var r mailauth.SPFResult
			if scope == mailauth.ScopeHelo {
				r = c.CheckHelo(cmd.Context(), ip, helo)
			} else {
				r = c.CheckMailFrom(cmd.Context(), ip, helo, mailFrom)
			}
			e.log.Debug("spf check", "ip", ip, "helo", helo, "mail_from", mailFrom, "result", r.Result, "detail", r.Detail)
			if g.json {
				return json.NewEncoder(g.stdout).Encode(r)
			}
			fmt.Fprintf(g.stdout, "spf=%s (scope %s, identity %s, client %s)\n", r.Result, r.Scope, r.Identity, ip)
			fmt.Fprintf(g.stdout, "domain: %s\n", r.Domain)
			if r.Detail != "" && r.Error == "" {
				fmt.Fprintf(g.stdout, "detail: %s\n", r.Detail)
			}
			if r.Explanation != "" {
				fmt.Fprintf(g.stdout, "explanation: %s\n", r.Explanation)
			}
			if r.Error != "" {
				fmt.Fprintf(g.stdout, "error: %s\n", r.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ipStr, "ip", "", "client IP address (required)")
	f.StringVar(&helo, "helo", "", "HELO/EHLO name")
	f.StringVar(&mailFrom, "mail-from", "", "MAIL FROM address; '' or '<>' for the null sender (required)")
	f.StringVar(&scope, "scope", mailauth.ScopeMailFrom, "identity to check: mfrom or helo")
	cmd.MarkFlagRequired("ip")        //nolint:errcheck
	cmd.MarkFlagRequired("mail-from") //nolint:errcheck
	return cmd
}
