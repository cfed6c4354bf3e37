package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/dkimkeys"
	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/store"
)

func newDMARCCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dmarc", Short: "DMARC aggregate reports: send ours, ingest and summarise others', publish records"}
	report := &cobra.Command{Use: "report", Short: "Send the reports we owe, or parse report files"}
	report.AddCommand(newReportSendCmd(g), newReportParseCmd(g))
	cmd.AddCommand(report, newSuppressCmd(g), newIngestCmd(g), newReportsCmd(g), newRecordCmd(g))
	return cmd
}

// parseUntil reads --until: RFC 3339, a date (midnight UTC) or "now".
func parseUntil(s string) (time.Time, error) {
	if s == "" || s == "now" {
		return time.Now(), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--until %q: write 2026-12-01 or 2026-12-01T06:00:00Z", s)
}

func newReportSendCmd(g *globals) *cobra.Command {
	var dryRun, domain, until string
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Send the aggregate reports of the periods finished by now (or --until)",
		Long: `Builds, for each finished period (reports.period, from midnight UTC) of the
last three days and each policy domain with recorded rows, one RFC 9990
report, and sends it to each verified rua address through reports.relay,
from reports.from, DKIM-signed when dkim.keys_dir has a key for its domain.
A report is marked sent only once the relay accepted it: run the command
again after any failure; what was sent is not sent again. One node sends at
a time. wehr serve does this on its own, five past every hour, when
reports.send is true.

--until counts the periods that end by then as finished: with a time in
the future it sends the current period's rows now (and not again later).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseUntil(until)
			if err != nil {
				return err
			}
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			rc := e.cfg.Reports
			if rc.From == "" {
				return usagef("reports.from is not set: the reports need a From address (and a place for their bounces)")
			}
			s := &dmarcreport.Sender{Config: rc, Store: st, DNS: e.res, Hostname: e.cfg.Hostname, Log: e.log,
				DryRun: dryRun, Domain: domain, LocalLock: dmarcreport.LocalLockPath(e.cfg.Store.Path)}
			if dir := e.cfg.DKIM.KeysDir; dir != "" {
				set, err := (&dkimkeys.Store{Dir: dir}).Load()
				if err != nil {
					e.log.Warn("dmarc report: DKIM keys broken; reports of their domains go unsigned", "error", err)
				}
				s.Sign = dmarcreport.KeySigner(func() *dkimkeys.Set { return set })
			}
			out, err := s.Run(cmd.Context(), t)
			if errors.Is(err, dmarcreport.ErrBusy) {
				fmt.Fprintln(g.stderr, "wehr: another node is sending reports now; nothing to do here")
				return nil
			}
			if g.json {
				if jerr := json.NewEncoder(g.stdout).Encode(out); jerr != nil {
					return jerr
				}
			} else {
				fmt.Fprintf(g.stdout, "reports %d, sent %d, refused %d, skipped %d, deferred %d\n",
					out.Reports, out.Sent, out.Refused, out.Skipped, out.Deferred)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&dryRun, "dry-run", "", "write the reports and messages into this folder instead of sending")
	cmd.Flags().StringVar(&domain, "domain", "", "only this policy domain")
	cmd.Flags().StringVar(&until, "until", "now", "periods that end by this time are finished (RFC 3339 or a date)")
	return cmd
}

func newSuppressCmd(g *globals) *cobra.Command {
	var remove, list bool
	var reason string
	cmd := &cobra.Command{
		Use:   "suppress [ADDRESS...]",
		Short: "Stop sending reports to addresses (they bounce or asked not to); --list, --remove",
		RunE: func(cmd *cobra.Command, args []string) error {
			if !list && len(args) == 0 {
				return usagef("name an address, or --list")
			}
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			sup := store.NewSuppressions(st)
			ctx := cmd.Context()
			if list {
				l, err := sup.List(ctx)
				if err != nil {
					return err
				}
				if g.json {
					if l == nil {
						l = []store.Suppression{}
					}
					return json.NewEncoder(g.stdout).Encode(l)
				}
				for _, s := range l {
					fmt.Fprintf(g.stdout, "%s\t%s\t%s\n", s.Address, s.Added.Format(time.RFC3339), s.Reason)
				}
				return nil
			}
			for _, a := range args {
				if !strings.Contains(a, "@") || strings.ContainsAny(a, " <>") {
					return usagef("%q is not an address", a)
				}
				if remove {
					err = sup.Remove(ctx, a)
				} else {
					err = sup.Add(ctx, store.Suppression{Address: a, Reason: reason, Added: time.Now().UTC()})
				}
				if err != nil {
					return err
				}
			}
			verb := "get no more reports"
			if remove {
				verb = "get reports again"
			}
			fmt.Fprintf(g.stdout, "%s will %s\n", strings.Join(args, ", "), verb)
			return nil
		},
	}
	cmd.Flags().BoolVar(&remove, "remove", false, "take the addresses off the list")
	cmd.Flags().BoolVar(&list, "list", false, "print the list")
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept with the entry)")
	return cmd
}
