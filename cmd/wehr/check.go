package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/authres"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/spf"
)

func newCheckCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Authenticate a message or an identity from the command line",
	}
	cmd.AddCommand(newCheckSPFCmd(g), newCheckMessageCmd(g), newCheckDomainCmd(g))
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
			if scope != spf.ScopeMailFrom && scope != spf.ScopeHelo {
				return usagef("--scope %q: want mfrom or helo", scope)
			}
			null := strings.TrimSpace(mailFrom) == "" || strings.TrimSpace(mailFrom) == "<>"
			if helo == "" && (null || scope == spf.ScopeHelo) {
				return usagef("--helo is needed for the null sender and for --scope helo")
			}
			e, err := g.load()
			if err != nil {
				return err
			}
			c := spf.New(e.res, e.cfg.SPFChecker())
			var r spf.Outcome
			if scope == spf.ScopeHelo {
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
	f.StringVar(&scope, "scope", spf.ScopeMailFrom, "identity to check: mfrom or helo")
	cmd.MarkFlagRequired("ip")        //nolint:errcheck
	cmd.MarkFlagRequired("mail-from") //nolint:errcheck
	return cmd
}

func newCheckMessageCmd(g *globals) *cobra.Command {
	var ipStr, helo, mailFrom, authUser, authservID string
	var rcpts []string
	cmd := &cobra.Command{
		Use:   "message [--ip IP] [--helo NAME] [--mail-from ADDR] [--rcpt ADDR] [--auth-user USER] [--authserv-id ID] [FILE|-]",
		Short: "Run the whole verdict engine (SPF, DKIM, DMARC, iprev) on a message file",
		Long: `Run the engine the milter runs on a message file (LF or CRLF line endings;
'-' or no FILE reads standard input) and print the verdict: the results, the
Authentication-Results header wehr would add, and the action (accept,
quarantine, reject, tempfail) with its SMTP reply.

Without --ip there is no SPF check (result none) and no iprev.
With --json, prints exactly one object:
  {"spf": {...as check spf...}, "dkim": [{"result", "domain", "selector",
   "algorithm", "b", "key_bits", "error"}], "arc": {"result", "instances",
   "sealers": [], "oldest_pass", "error"}, "dmarc": {"result", "from_domain",
   "policy_domain", "org_domain", "policy", "discovery", "testing",
   "disposition", "overrides": [], "refusal_evidence": [], "spf_aligned",
   "dkim_aligned"}, "iprev": {"result", "name"}, "auth": {"result", "user"},
   "authentication_results": "...", "action": "...", "smtp_reply": "..."}
The exit status is 0 whatever the verdict.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("at most one FILE, got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var ip net.IP
			if ipStr != "" {
				if ip = net.ParseIP(ipStr); ip == nil {
					return usagef("--ip %q is not an IP address", ipStr)
				}
			}
			in := g.stdin
			name := "standard input"
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					// A file that cannot be read is a runtime error (1),
					// not a usage error (README, command-line contract).
					return err
				}
				defer f.Close()
				in, name = f, args[0]
			}
			data, err := io.ReadAll(in)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			e, err := g.load()
			if err != nil {
				return err
			}
			cfg := e.cfg.Engine()
			if authservID != "" {
				cfg.AuthservID = authservID
			}
			engine := mailauth.NewEngine(e.res, cfg)
			env := mailauth.Envelope{ClientIP: ip, Helo: helo, MailFrom: mailFrom, RcptTo: rcpts, AuthUser: authUser}
			v, err := engine.Verify(cmd.Context(), env, bytes.NewReader(data))
			if err != nil {
				return err
			}
			e.log.Debug("verdict", "action", v.Action, "dmarc", v.DMARC.Result, "dns_queries", v.DNSQueries)
			if g.json {
				return json.NewEncoder(g.stdout).Encode(v)
			}
			printVerdict(g.stdout, v, cfg.AuthservID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ipStr, "ip", "", "client IP address")
	f.StringVar(&helo, "helo", "", "HELO/EHLO name")
	f.StringVar(&mailFrom, "mail-from", "", "MAIL FROM address ('' or '<>': the null sender)")
	f.StringArrayVar(&rcpts, "rcpt", nil, "RCPT TO address (repeatable)")
	f.StringVar(&authUser, "auth-user", "", "SASL user that authenticated")
	f.StringVar(&authservID, "authserv-id", "", "authserv-id for the A-R header (default: config authserv_id)")
	return cmd
}

func printVerdict(w io.Writer, v *mailauth.Verdict, authservID string) {
	fmt.Fprintf(w, "action: %s", v.Action)
	if v.SMTPReply != "" {
		fmt.Fprintf(w, " (%s)", v.SMTPReply)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "spf:    %s for %s", v.SPF.Result, v.SPF.Domain)
	if v.SPF.Explanation != "" {
		fmt.Fprintf(w, " (%s)", v.SPF.Explanation)
	}
	if v.SPF.Error != "" {
		fmt.Fprintf(w, " (%s)", v.SPF.Error)
	}
	fmt.Fprintln(w)
	if len(v.DKIM) == 0 {
		fmt.Fprintln(w, "dkim:   none (no signatures)")
	}
	for _, s := range v.DKIM {
		fmt.Fprintf(w, "dkim:   %s d=%s s=%s a=%s b=%s", s.Result, s.Domain, s.Selector, s.Algorithm, s.B)
		if s.KeyBits > 0 {
			fmt.Fprintf(w, " (%d-bit key)", s.KeyBits)
		}
		if s.Error != "" {
			fmt.Fprintf(w, ": %s", s.Error)
		}
		fmt.Fprintln(w)
	}
	for _, d := range v.AllDMARC {
		fmt.Fprintf(w, "dmarc:  %s for From domain %s", d.Result, d.FromDomain)
		if d.Policy != "" {
			fmt.Fprintf(w, ", %s=%s of %s (org domain %s, %s), disposition %s", d.PolicyTag, d.Policy, d.PolicyDomain, d.OrgDomain, d.Discovery, d.Disposition)
		}
		if d.Testing {
			fmt.Fprint(w, ", testing")
		}
		fmt.Fprintf(w, "; aligned: spf=%v dkim=%v", d.SPFAligned, d.DKIMAligned)
		if len(d.Overrides) > 0 {
			fmt.Fprintf(w, "; overrides %s", strings.Join(d.Overrides, ", "))
		}
		if len(d.RefusalEvidence) > 0 {
			fmt.Fprintf(w, "; evidence %s", strings.Join(d.RefusalEvidence, ", "))
		}
		if d.Reason != "" {
			fmt.Fprintf(w, " (%s)", d.Reason)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "iprev:  %s %s\n", v.IPRev.Result, v.IPRev.Name)
	fmt.Fprintf(w, "auth:   %s %s\n", v.Auth.Result, v.Auth.User)
	fmt.Fprintf(w, "Authentication-Results: %s\n", authres.FoldValue(v.AuthenticationResults, "\n"))
}

func newCheckDomainCmd(g *globals) *cobra.Command {
	var selectors []string
	cmd := &cobra.Command{
		Use:   "domain DOMAIN [--selector S ...]",
		Short: "Show what a domain publishes (SPF, DKIM keys, DMARC) with warnings",
		Long: `Show what a domain publishes for mail authentication: its SPF record with
the DNS lookups it costs, the DKIM key of each --selector, and the DMARC record
that applies, each with warnings a postmaster can act on.

With --json: {"domain", "spf": {"record", "lookups", "warnings": []},
"dkim": [{"selector", "key_type", "key_bits", "warnings": []}],
"dmarc": {"record", "policy_domain", "discovery", "warnings": []},
"warnings": []}`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := g.load()
			if err != nil {
				return err
			}
			engine := mailauth.NewEngine(e.res, e.cfg.Engine())
			r := engine.CheckDomain(cmd.Context(), args[0], selectors)
			if g.json {
				return json.NewEncoder(g.stdout).Encode(r)
			}
			w := g.stdout
			fmt.Fprintf(w, "domain: %s\n", r.Domain)
			if r.SPF.Record == "" {
				fmt.Fprintf(w, "spf:    not published\n")
			} else {
				fmt.Fprintf(w, "spf:    %q (%d DNS lookups)\n", r.SPF.Record, r.SPF.Lookups)
			}
			warn(w, r.SPF.Warnings)
			for _, k := range r.DKIM {
				switch {
				case k.KeyType == "":
					fmt.Fprintf(w, "dkim:   %s: not published\n", k.Selector)
				case k.KeyBits == 0:
					fmt.Fprintf(w, "dkim:   %s: %s, no usable key\n", k.Selector, k.KeyType)
				default:
					fmt.Fprintf(w, "dkim:   %s: %s %d bits\n", k.Selector, k.KeyType, k.KeyBits)
				}
				warn(w, k.Warnings)
			}
			if r.DMARC.Record == "" {
				fmt.Fprintf(w, "dmarc:  not published (%s)\n", r.DMARC.Discovery)
			} else {
				fmt.Fprintf(w, "dmarc:  %q at %s (%s)\n", r.DMARC.Record, r.DMARC.PolicyDomain, r.DMARC.Discovery)
			}
			warn(w, r.DMARC.Warnings)
			warn(w, r.Warnings)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&selectors, "selector", nil, "DKIM selector to check (repeatable)")
	return cmd
}

func warn(w io.Writer, ws []string) {
	for _, s := range ws {
		fmt.Fprintf(w, "  warning: %s\n", s)
	}
}
