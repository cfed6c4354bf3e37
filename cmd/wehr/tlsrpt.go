package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/tlsrpt"
)

func newTLSRPTCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tlsrpt",
		Short: "SMTP TLS reporting (RFC 8460): the record to publish, the reports received",
		Args:  exactArgs(0),
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var rua []string
	record := &cobra.Command{
		Use:   "record DOMAIN --rua URI...",
		Short: "The _smtp._tls TXT record that asks senders for TLS reports about DOMAIN",
		Long: `Print the _smtp._tls TXT record to publish for DOMAIN (RFC 8460 3): senders
then report, once a day, the TLS connections they made to its MX hosts and
the failures (with MTA-STS or DANE). --rua is where: mailto:ADDRESS or an
https: URL.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(rua) == 0 {
				return usagef("--rua: where the reports go (mailto:tls-reports@example.net)")
			}
			for _, u := range rua {
				if !strings.HasPrefix(u, "mailto:") && !strings.HasPrefix(u, "https://") || strings.ContainsAny(u, " ,;!") {
					return usagef("--rua %q: mailto:ADDRESS or https://URL (RFC 8460 3)", u)
				}
			}
			domain := strings.TrimSuffix(args[0], ".")
			fmt.Fprintf(g.stdout, "_smtp._tls.%s. IN TXT %q\n", domain, "v=TLSRPTv1; rua="+strings.Join(rua, ","))
			return nil
		},
	}
	record.Flags().StringSliceVar(&rua, "rua", nil, "mailto:ADDRESS or https://URL (repeat or comma-separate)")
	cmd.AddCommand(record, newTLSIngestCmd(g), newTLSReportsCmd(g))
	return cmd
}

func newTLSIngestCmd(g *globals) *cobra.Command {
	return newInboxCmd(g, "tlsrpt", "Store a received TLS report (an email, or a .json or .json.gz file)",
		`Reads one TLS report email (RFC 8460 5.3), as a Postfix pipe transport hands
it on standard input, or a bare report file, and stores the report under each
policy domain it names (once per reporting organisation and report id).`,
		func(st store.Store) reportmail.Taker { return tlsrpt.Taker(st, tlsrpt.DefaultLimits()) })
}

func newTLSReportsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "reports", Short: "The TLS reports received about our domains: list, show, summary"}
	var domain, since string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the TLS reports received about a domain",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if domain == "" {
				return usagef("--domain is required")
			}
			t, err := parseSince(since)
			if err != nil {
				return err
			}
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			reps, err := tlsrpt.Reports(cmd.Context(), st, domain, t)
			if err != nil {
				return err
			}
			type item struct {
				ID         string           `json:"id"`
				OrgName    string           `json:"org_name"`
				ReportID   string           `json:"report_id"`
				DateRange  tlsrpt.DateRange `json:"date_range"`
				Successful int64            `json:"successful"`
				Failed     int64            `json:"failed"`
				ReceivedAt time.Time        `json:"received_at"`
			}
			out := []item{}
			for _, s := range reps {
				ok, bad := s.Totals()
				out = append(out, item{ID: s.ID, OrgName: s.Report.OrganizationName, ReportID: s.Report.ReportID,
					DateRange: s.Report.DateRange, Successful: ok, Failed: bad, ReceivedAt: s.ReceivedAt})
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "TLS reports about %s: %d\n", domain, len(out))
			for _, r := range out {
				fmt.Fprintf(g.stdout, "  %s  %s  %-24s %8d ok %6d failed  %s\n", r.ID, r.DateRange.Start.UTC().Format("2006-01-02 15:04"),
					r.OrgName, r.Successful, r.Failed, r.ReportID)
			}
			return nil
		},
	}
	list.Flags().StringVar(&domain, "domain", "", "the policy domain")
	list.Flags().StringVar(&since, "since", "", "only reports whose period ends after this (7d, 48h, a date)")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Print one stored TLS report (ID as reports list prints it, or the report id)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			found, err := tlsrpt.Find(cmd.Context(), st, args[0])
			if err != nil {
				return err
			}
			if g.json {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(found)
			}
			for _, s := range found {
				r := s.Report
				fmt.Fprintf(g.stdout, "%s: TLS report %s from %s <%s> about %s\n", s.ID, r.ReportID, r.OrganizationName, r.ContactInfo, s.Domain)
				fmt.Fprintf(g.stdout, "  period   %s to %s\n", r.DateRange.Start.UTC().Format(time.RFC3339), r.DateRange.End.UTC().Format(time.RFC3339))
				for _, p := range r.Policies {
					fmt.Fprintf(g.stdout, "  policy   %s %s: %d ok, %d failed\n", p.Policy.Type, strings.Join(p.Policy.MXHost, ","), p.Summary.Successful, p.Summary.Failed)
					for _, f := range p.FailureDetails {
						fmt.Fprintf(g.stdout, "    %-26s %6d  mx=%s from=%s %s\n", f.ResultType, f.FailedSessionCount, f.ReceivingMXHostname, f.SendingMTAIP, f.FailureReasonCode)
					}
				}
			}
			return nil
		},
	}
	var sdomain, ssince string
	summary := &cobra.Command{
		Use:   "summary",
		Short: "How mail reaches a domain's MX hosts: sessions with and without TLS, the failures by kind and MX host",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sdomain == "" {
				return usagef("--domain is required")
			}
			t, err := parseSince(ssince)
			if err != nil {
				return err
			}
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			sum, err := tlsrpt.Summarize(cmd.Context(), st, sdomain, t)
			if err != nil {
				return err
			}
			if g.json {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(sum)
			}
			w := g.stdout
			fmt.Fprintf(w, "%s: %d TLS reports, %d sessions ok, %d failed\n", sum.Domain, sum.Reports, sum.Successful, sum.Failed)
			fmt.Fprintln(w, "policies applied:")
			for _, p := range sum.Policies {
				fmt.Fprintf(w, "  %-16s %-8s %8d ok %6d failed  %d reports  %s\n", p.Type, p.Mode, p.Successful, p.Failed, p.Reports, strings.Join(p.MXHost, ","))
			}
			fmt.Fprintln(w, "failures (most sessions first):")
			for _, f := range sum.Failures {
				fmt.Fprintf(w, "  %-26s %6d  mx=%s  from=%s  seen by %s  %s\n", f.ResultType, f.Sessions, f.MX, strings.Join(f.SendingIPs, ","), strings.Join(f.Orgs, ","), f.Info)
			}
			fmt.Fprintln(w, "reporting organisations:")
			for _, o := range sum.Orgs {
				fmt.Fprintf(w, "  %-30s %4d reports %8d ok %6d failed\n", o.Org, o.Reports, o.Successful, o.Failed)
			}
			return nil
		},
	}
	summary.Flags().StringVar(&sdomain, "domain", "", "the policy domain")
	summary.Flags().StringVar(&ssince, "since", "", "only reports whose period ends after this (7d, 48h, a date)")
	cmd.AddCommand(list, show, summary)
	return cmd
}
