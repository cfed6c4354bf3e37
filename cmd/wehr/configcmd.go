package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/config"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check a configuration file or print the defaults",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file: exit 0, or 2 with one line per problem",
		Long: `Validate a configuration file as wehr would at start: exit status 0 if it is
good, 2 with one line per problem (FILE:LINE: key: message) if not. Suitable
for Ansible's template validate: 'wehr config check %s'.`,
		Args: exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := config.Load(args[0])
			if err != nil {
				var ce *config.Errors
				if errors.As(err, &ce) {
					return err
				}
				return usageError{err}
			}
			if !g.json {
				fmt.Fprintf(g.stdout, "%s: ok\n", args[0])
			} else {
				fmt.Fprintln(g.stdout, `{"ok": true}`)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "defaults",
		Short: "Print the full default configuration, commented",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprint(g.stdout, config.DefaultsText())
			return err
		},
	})
	return cmd
}
