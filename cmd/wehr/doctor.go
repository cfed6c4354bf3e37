package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/doctor"
	"github.com/wehr/wehr/store"
)

func newDoctorCmd(g *globals) *cobra.Command {
	var postfixDir string
	var noPostfix bool
	cmd := &cobra.Command{
		Use:   "doctor [--postfix-config DIR]",
		Short: "Check the installation: config, DNS, store, daemons, DKIM keys, Postfix wiring",
		Long: `Check the installation the way you would by hand: the configuration, that
DNS answers, that the store answers, that the milter and the policy service
listen, that the DKIM keys load and are published, and that Postfix's main.cf
names wehr (postconf; --postfix-config DIR for another instance). Each
finding says what to do. Exit status 0 without FAIL, 1 with one.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			in := doctor.Inputs{Config: e.cfg, ConfigPath: e.path, Resolver: e.res,
				OpenStore: func() (store.Store, error) { return opsStore(e) }}
			if !noPostfix {
				in.Postconf = doctor.Postconf(postfixDir)
			}
			fs := doctor.Run(cmd.Context(), in)
			failed := 0
			for _, f := range fs {
				if f.Status == doctor.Fail {
					failed++
				}
				if g.json {
					json.NewEncoder(g.stdout).Encode(f) //nolint:errcheck
					continue
				}
				fmt.Fprintf(g.stdout, "%-4s  %-22s %s\n", f.Status, f.Check, f.Detail)
				if f.Fix != "" {
					fmt.Fprintf(g.stdout, "      %-22s -> %s\n", "", f.Fix)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d checks failed", failed)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&postfixDir, "postfix-config", "", "Postfix config directory to check (default: the default instance)")
	cmd.Flags().BoolVar(&noPostfix, "no-postfix", false, "do not check Postfix")
	return cmd
}
