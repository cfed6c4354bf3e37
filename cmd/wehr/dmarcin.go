package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/store"
)

// exTempFail is sysexits' EX_TEMPFAIL: Postfix's pipe keeps the message
// and tries again.
const exTempFail = 75

func tempfail(format string, args ...any) error {
	return exitError{code: exTempFail, err: fmt.Errorf(format, args...)}
}

// sysexit gives an inbox error its exit status: EX_TEMPFAIL when the
// report must come again.
func sysexit(err error) error {
	if errors.Is(err, reportmail.ErrTryLater) {
		return exitError{code: exTempFail, err: err}
	}
	return err
}

func newIngestCmd(g *globals) *cobra.Command {
	return newInboxCmd(g, "dmarc", "Store a received DMARC aggregate report (an email, or a .xml, .xml.gz or .zip file)",
		`Reads one report email, as a Postfix pipe transport hands it on standard
input, or a bare report file, and stores the report under its policy domain
(once per reporting organisation and report id).`,
		func(st store.Store) reportmail.Taker { return dmarcreport.Taker(st, dmarcreport.Limits{}) })
}

// newInboxCmd is the ingest command of a kind of report: a Postfix pipe
// transport's, or an admin's with a file or a Maildir.
func newInboxCmd(g *globals, kind, short, long string, take func(store.Store) reportmail.Taker) *cobra.Command {
	var maildir, failed string
	cmd := &cobra.Command{
		Use:   "ingest [FILE|-]",
		Short: short,
		Long: long + `

Exit status, for Postfix: 0 when the report was stored, was a duplicate, or
could not be read (then the message is kept in reports.failed, or --failed,
with a .reason file beside it, and never bounced to the reporter); 75
(EX_TEMPFAIL) when the store or the configuration is not available, so that
Postfix tries again later.

--maildir DIR reads every message in DIR/new, moves it to DIR/cur once its
report is stored, or to the failed folder with the reason.`,
		Args: func(_ *cobra.Command, args []string) error { return maxArgs(args, 1) },
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.load()
			if err != nil {
				return tempfail("configuration: %v", err)
			}
			if failed == "" {
				failed = e.cfg.Reports.Failed
			}
			st, err := opsStore(e)
			if err != nil {
				return tempfail("store: %v", err)
			}
			defer st.Close()
			in := &reportmail.Inbox{Kind: kind, Take: take(st), Failed: failed, Log: e.log, Out: g.stdout}
			if maildir != "" {
				if len(args) > 0 {
					return usagef("name a FILE or --maildir, not both")
				}
				return sysexit(in.Maildir(cmd.Context(), maildir))
			}
			var r io.Reader = g.stdin
			name := "stdin"
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r, name = f, args[0]
			}
			return sysexit(in.One(cmd.Context(), r, name))
		},
	}
	cmd.Flags().StringVar(&maildir, "maildir", "", "process every message in this Maildir's new/")
	cmd.Flags().StringVar(&failed, "failed", "", "folder for reports that cannot be read (default: reports.failed)")
	return cmd
}

// parseSince reads a --since value: a duration back from now (48h, 7d)
// or a date.
func parseSince(since string) (time.Time, error) {
	if since == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(since); err == nil {
		return time.Now().Add(-d), nil
	}
	if strings.HasSuffix(since, "d") {
		var n int
		if _, err := fmt.Sscanf(since, "%dd", &n); err == nil {
			return time.Now().AddDate(0, 0, -n), nil
		}
	}
	t, err := parseUntil(since)
	if err != nil {
		return t, usagef("--since %q: write 7d, 48h or a date", since)
	}
	return t, nil
}

func newReportParseCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "parse FILE...",
		Short: "Print received reports (emails or .xml, .xml.gz, .zip files) without storing them",
		Long: `Prints each report: with --json one JSON object per file, in order, with
format, org_name, email, report_id, date_range {begin, end}, policy_published
(pct and fo from RFC 7489 reports, np, testing and discovery_method from RFC
9990 ones) and records (each with row, identifiers and auth_results).`,
		Args: func(_ *cobra.Command, args []string) error { return minArgs(args, 1) },
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := 0
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			for _, name := range args {
				rep, err := parseFile(name)
				if err != nil {
					fmt.Fprintf(g.stderr, "wehr: %s: %v\n", name, err)
					failed++
					continue
				}
				if g.json {
					if err := enc.Encode(rep); err != nil {
						return err
					}
					continue
				}
				printReport(g.stdout, name, rep)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d files could not be read", failed, len(args))
			}
			return nil
		},
	}
}

func parseFile(name string) (*dmarcreport.Report, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	x, _, err := dmarcreport.Open(f, dmarcreport.Limits{})
	if err != nil {
		return nil, err
	}
	return dmarcreport.Parse(x, dmarcreport.Limits{})
}

func printReport(w io.Writer, name string, rep *dmarcreport.Report) {
	p := rep.Policy
	fmt.Fprintf(w, "%s: %s report %s from %s <%s>\n", name, rep.Format, rep.ReportID, rep.OrgName, rep.Email)
	fmt.Fprintf(w, "  period   %s to %s\n", time.Unix(rep.DateRange.Begin, 0).UTC().Format(time.RFC3339), time.Unix(rep.DateRange.End, 0).UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  policy   %s p=%s sp=%s adkim=%s aspf=%s\n", p.Domain, p.P, p.SP, p.ADKIM, p.ASPF)
	fmt.Fprintf(w, "  records  %d, messages %d\n", rep.RecordCount, rep.MessageCount)
	for _, r := range rep.Records {
		fmt.Fprintf(w, "  %-39s %6d  %-10s dkim=%-4s spf=%-4s from=%s\n", r.Row.SourceIP, r.Row.Count,
			r.Row.PolicyEvaluated.Disposition, r.Row.PolicyEvaluated.DKIM, r.Row.PolicyEvaluated.SPF, r.Identifiers.HeaderFrom)
	}
	for _, r := range rep.Repairs {
		fmt.Fprintf(w, "  repaired: %s\n", r)
	}
}

func newReportsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "reports", Short: "The reports received about our domains (and those we sent): list, show, summary"}
	var domain, since string
	list := &cobra.Command{
		Use:   "list",
		Short: "List a domain's received reports, and the reports we sent about it",
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
			reps, err := dmarcreport.Reports(cmd.Context(), st, domain, t)
			if err != nil {
				return err
			}
			marks, err := store.NewReportMarks(st).List(cmd.Context(), domain)
			if err != nil {
				return err
			}
			type item struct {
				ID         string                `json:"id"`
				OrgName    string                `json:"org_name"`
				ReportID   string                `json:"report_id"`
				DateRange  dmarcreport.DateRange `json:"date_range"`
				Records    int                   `json:"records"`
				Messages   int64                 `json:"messages"`
				Fail       int64                 `json:"fail"`
				ReceivedAt time.Time             `json:"received_at"`
			}
			out := struct {
				Received []item             `json:"received"`
				Sent     []store.ReportMark `json:"sent"`
			}{Received: []item{}, Sent: []store.ReportMark{}}
			for _, s := range reps {
				out.Received = append(out.Received, item{ID: s.ID, OrgName: s.Report.OrgName, ReportID: s.Report.ReportID,
					DateRange: s.Report.DateRange, Records: s.Report.RecordCount, Messages: s.Report.MessageCount,
					Fail: s.Report.FailCount, ReceivedAt: s.ReceivedAt})
			}
			for _, m := range marks {
				if !m.Begin.Before(t) || t.IsZero() {
					out.Sent = append(out.Sent, m)
				}
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(out)
			}
			fmt.Fprintf(g.stdout, "received about %s: %d\n", domain, len(out.Received))
			for _, r := range out.Received {
				fmt.Fprintf(g.stdout, "  %s  %s  %-24s %7d msgs %6d fail  %s\n", r.ID, time.Unix(r.DateRange.Begin, 0).UTC().Format("2006-01-02 15:04"),
					r.OrgName, r.Messages, r.Fail, r.ReportID)
			}
			fmt.Fprintf(g.stdout, "sent about %s: %d\n", domain, len(out.Sent))
			for _, m := range out.Sent {
				fmt.Fprintf(g.stdout, "  %s  %-10s %s  %s\n", m.Begin.Format("2006-01-02 15:04"), m.Status, m.Address, m.ReportID)
			}
			return nil
		},
	}
	list.Flags().StringVar(&domain, "domain", "", "the policy domain")
	list.Flags().StringVar(&since, "since", "", "only reports whose period ends after this (7d, 48h, a date)")
	showFile := false
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Print one stored report, records included (ID as reports list prints it, or the report id)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			s, err := dmarcreport.Find(cmd.Context(), st, args[0])
			if err != nil {
				return err
			}
			if showFile {
				kept, err := s.File(cmd.Context(), st, g.stdout)
				if err == nil && !kept {
					err = fmt.Errorf("dmarc: report %s was stored before wehr kept report files; without --file it prints what was read from it", s.ID)
				}
				return err
			}
			rep, err := s.Whole(cmd.Context(), st)
			if err != nil {
				return err
			}
			if g.json {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printReport(g.stdout, s.ID, rep)
			return nil
		},
	}
	show.Flags().BoolVar(&showFile, "file", false, "print the report file as it was received (its XML)")
	var sdomain, ssince string
	summary := &cobra.Command{
		Use:   "summary",
		Short: "Who sends mail as a domain: per reporting org and per source IP, the sources failing DMARC first",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sdomain == "" {
				return usagef("--domain is required")
			}
			t, err := parseSince(ssince)
			if err != nil {
				return err
			}
			e, st, err := g.opsStore()
			if err != nil {
				return err
			}
			defer st.Close()
			sum, err := dmarcreport.Summarize(cmd.Context(), st, e.res, sdomain, t)
			if err != nil {
				return err
			}
			if g.json {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(sum)
			}
			w := g.stdout
			fmt.Fprintf(w, "%s: %d reports, %d messages, %d pass DMARC, %d fail\n", sum.Domain, sum.Reports, sum.Messages, sum.Pass, sum.Fail)
			fmt.Fprintln(w, "sources (failing first):")
			for _, s := range sum.Sources {
				ptr := "(no PTR)"
				if len(s.PTR) > 0 {
					ptr = strings.Join(s.PTR, ",")
				}
				fmt.Fprintf(w, "  %-39s %7d fail %7d pass  %s  from=%s  dkim=%s  spf=%s\n", s.IP, s.Fail, s.Pass, ptr, strings.Join(s.HeaderFrom, ","),
					strings.Join(s.DKIM, ";"), strings.Join(s.SPF, ";"))
			}
			fmt.Fprintln(w, "reporting organisations:")
			for _, o := range sum.Orgs {
				fmt.Fprintf(w, "  %-30s %4d reports %7d messages %7d fail\n", o.Org, o.Reports, o.Messages, o.Fail)
			}
			fmt.Fprintf(w, "reports we sent about %s: %d\n", sum.Domain, len(sum.Sent))
			return nil
		},
	}
	summary.Flags().StringVar(&sdomain, "domain", "", "the policy domain")
	summary.Flags().StringVar(&ssince, "since", "", "only reports whose period ends after this (7d, 48h, a date)")
	cmd.AddCommand(list, show, summary)
	return cmd
}

func newRecordCmd(g *globals) *cobra.Command {
	var req dmarcreport.PolicyRequest
	cmd := &cobra.Command{
		Use:   "record DOMAIN",
		Short: "Print the DMARC record to publish for a domain (and the _report._dmarc records its report addresses need)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Domain = args[0]
			recs, err := req.Records()
			if err != nil {
				return usageError{err}
			}
			if g.json {
				return json.NewEncoder(g.stdout).Encode(recs)
			}
			for _, r := range recs {
				fmt.Fprintf(g.stdout, "; %s\n%s\n", r.Why, r.Zone())
			}
			fmt.Fprintf(g.stdout, "; once published: wehr check domain %s\n", strings.ToLower(req.Domain))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Policy, "policy", "", "p=: none, quarantine or reject (required)")
	f.StringVar(&req.Subdomain, "subdomain-policy", "", "sp=: the policy for subdomains")
	f.StringVar(&req.NonExistent, "np", "", "np=: the policy for subdomains that do not exist")
	f.StringSliceVar(&req.RUA, "rua", nil, "an address for the aggregate reports (repeat for several)")
	f.StringVar(&req.ADKIM, "adkim", "", "DKIM alignment: r (relaxed, the default) or s (strict)")
	f.StringVar(&req.ASPF, "aspf", "", "SPF alignment: r (relaxed, the default) or s (strict)")
	f.BoolVar(&req.Testing, "testing", false, "t=y: the policy is being tested (receivers apply one level less)")
	cmd.MarkFlagRequired("policy")
	return cmd
}
