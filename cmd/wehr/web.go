package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/setting"
	"github.com/wehr/wehr/web"
)

func newWebCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "web",
		Short: "The web view of the reports (web.listen): tokens for its readers",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var name string
	var admin bool
	var domains []string
	token := &cobra.Command{
		Use:   "token --name NAME (--admin | --domain D...)",
		Short: "Make a token for the web view: prints the token (give it to its reader) and the line for web.tokens",
		Long: `Makes a new random token and prints it, with the line to add to web.tokens in
the configuration: the token's name, its SHA-256 (the token itself is kept
nowhere) and what it shows: every domain (--admin) or the domains named
(--domain, repeat or comma-separate). The reader gives the token as the
password of the browser's login (any user name), or as
Authorization: Bearer TOKEN. wehr serve reads the new line on reload (systemctl reload wehr); web.listen,
web.allow_remote and the certificate need a restart.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usagef("--name: who the token is for (it names the token in the log)")
			}
			if admin == (len(domains) > 0) {
				return usagef("either --admin or --domain, one of the two")
			}
			for _, d := range domains {
				if !setting.IsDomain(d) {
					return usagef("--domain %q: not a domain name", d)
				}
			}
			tok, hash := web.NewToken()
			line := web.Token{Name: name, Hash: hash, Admin: admin}
			for _, d := range domains {
				line.Domains = append(line.Domains, strings.ToLower(strings.TrimSuffix(d, ".")))
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(map[string]any{"token": tok, "entry": line})
			}
			what := "admin: true"
			if !admin {
				what = "domains: [" + strings.Join(line.Domains, ", ") + "]"
			}
			fmt.Fprintf(g.stdout, "token: %s\n# under web.tokens in the configuration:\n  - {name: %q, hash: %q, %s}\n", tok, name, hash, what)
			return nil
		},
	}
	token.Flags().StringVar(&name, "name", "", "who the token is for")
	token.Flags().BoolVar(&admin, "admin", false, "the token shows every domain, and the admin pages")
	token.Flags().StringSliceVar(&domains, "domain", nil, "a domain the token shows (repeat or comma-separate)")
	cmd.AddCommand(token)
	return cmd
}
