package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/internal/loadstat"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/milterbench"
	"github.com/wehr/wehr/policybench"
	"github.com/wehr/wehr/resolver/dnstest"
	"github.com/wehr/wehr/stsbench"
)

// measured runs a load test and, when --pid names the process under
// test, says what that process used per unit of work (run returns how
// many units it did).
func measured(w io.Writer, pid int, unit string, run func() (int, error)) error {
	var before loadstat.Usage
	if pid > 0 {
		var err error
		if before, err = loadstat.ReadUsage(pid); err != nil {
			return usagef("--pid %d: %v", pid, err)
		}
	}
	n, err := run()
	if err != nil || pid <= 0 {
		return err
	}
	after, err := loadstat.ReadUsage(pid)
	if err != nil {
		return fmt.Errorf("--pid %d: %w", pid, err)
	}
	loadstat.PrintUsage(w, pid, before, after, n, unit)
	return nil
}

func newBenchCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test milters: generate a corpus, serve its DNS, replay it",
		Long: `Load-test wehr (or any milter) as Postfix drives it:

  wehr bench corpus --out /tmp/corpus --count 700
  wehr bench dns --zone /tmp/corpus/zone.txt --listen 127.0.0.1:5300 &
  wehr --resolver 127.0.0.1:5300 milter --listen inet:127.0.0.1:8895 &
  wehr bench milter --addr inet:127.0.0.1:8895 --corpus /tmp/corpus --concurrency 8 --duration 30s`,
	}
	var out string
	var count int
	corpus := &cobra.Command{
		Use:   "corpus --out DIR [--count N]",
		Short: "Write a corpus: RSA, Ed25519, dual-signed, forwarded, broken, spoofed and list messages, a manifest and a DNS zone",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			if out == "" {
				return usagef("--out is required")
			}
			if err := milterbench.Generate(out, count); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %d messages, manifest.json and zone.txt to %s\n", count, out)
			return nil
		},
	}
	corpus.Flags().StringVar(&out, "out", "", "directory to write")
	corpus.Flags().IntVar(&count, "count", 700, "number of messages")

	var zone, listen string
	dnsCmd := &cobra.Command{
		Use:   "dns --zone FILE --listen IP:PORT",
		Short: "Serve a zone file over UDP and TCP until interrupted (the corpus's test DNS)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			text, err := os.ReadFile(zone)
			if err != nil {
				return usageError{err}
			}
			srv, err := dnstest.StartAt(listen, string(text))
			if err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(g.stdout, "serving %s on %s\n", zone, srv.Addr())
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			select {
			case <-sig:
			case <-cmd.Context().Done():
			}
			return nil
		},
	}
	dnsCmd.Flags().StringVar(&zone, "zone", "", "zone file (master-file syntax)")
	dnsCmd.Flags().StringVar(&listen, "listen", "127.0.0.1:5300", "address to serve on")

	var o milterbench.Options
	var labels []string
	var mpid, ppid int
	var warmup bool
	mcmd := &cobra.Command{
		Use:   "milter --addr ADDR [--addr ADDR2 ...] --corpus DIR [--concurrency N] [--duration D]",
		Short: "Replay a corpus against a milter or a chain of milters and report throughput, latency and agreement",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(o.Addrs) == 0 || o.Corpus == "" {
				return usagef("--addr and --corpus are required")
			}
			var rep *milterbench.Report
			if err := measured(g.stdout, mpid, "message", func() (n int, err error) {
				if rep, err = milterbench.Run(cmd.Context(), o); err != nil {
					return 0, err
				}
				label := fmt.Sprint(o.Addrs)
				if len(labels) > 0 {
					label = labels[0]
				}
				rep.Print(g.stdout, label)
				return rep.Messages, nil
			}); err != nil {
				return err
			}
			if rep.Errors > 0 {
				return fmt.Errorf("%d messages failed", rep.Errors)
			}
			return nil
		},
	}
	mcmd.Flags().StringArrayVar(&o.Addrs, "addr", nil, "milter address, inet:HOST:PORT or unix:/path (repeat for a chain)")
	mcmd.Flags().StringVar(&o.Corpus, "corpus", "", "corpus directory (from wehr bench corpus)")
	mcmd.Flags().IntVar(&o.Concurrency, "concurrency", 4, "messages in flight")
	mcmd.Flags().DurationVar(&o.Duration, "duration", 0, "how long to run (default: one pass over the corpus)")
	mcmd.Flags().StringArrayVar(&labels, "label", nil, "name for the report line")
	mcmd.Flags().IntVar(&mpid, "pid", 0, "also report this process's CPU per message and memory (the milter's pid)")
	mcmd.Flags().StringVar(&o.QuarantineHeader, "quarantine-header", "X-Wehr-Quarantine", "header that marks quarantine")
	var po policybench.Options
	var paddr, plabel string
	pcmd := &cobra.Command{
		Use:   "policyd --addr ADDR [--concurrency N] [--duration D]",
		Short: "Load a Postfix policy service (wehr policyd, postgrey, ...) with a greylisting workload",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := listener.ParseAddress(paddr, true)
			if err != nil {
				return usagef("--addr: %v", err)
			}
			po.Network, po.Addr = a.Network, a.Address
			if warmup {
				// Before measuring, so that the CPU counted is the run's.
				if err := policybench.Warmup(cmd.Context(), po); err != nil {
					return err
				}
			}
			var rep *policybench.Report
			if err := measured(g.stdout, ppid, "request", func() (n int, err error) {
				if rep, err = policybench.Run(cmd.Context(), po); err != nil {
					return 0, err
				}
				if plabel == "" {
					plabel = paddr
				}
				rep.Print(g.stdout, plabel)
				return rep.Requests, nil
			}); err != nil {
				return err
			}
			if rep.Errors > 0 {
				return fmt.Errorf("%d requests failed", rep.Errors)
			}
			return nil
		},
	}
	pcmd.Flags().StringVar(&paddr, "addr", "inet:127.0.0.1:10045", "policy service address, inet:HOST:PORT or unix:/path")
	pcmd.Flags().IntVar(&po.Concurrency, "concurrency", 16, "connections")
	pcmd.Flags().BoolVar(&warmup, "warmup", true, "send every triplet once before measuring (the service's steady state)")
	pcmd.Flags().DurationVar(&po.Duration, "duration", 10*time.Second, "how long to run")
	pcmd.Flags().IntVar(&po.Triplets, "triplets", 20000, "distinct greylisting triplets")
	pcmd.Flags().StringVar(&plabel, "label", "", "name for the report line")
	pcmd.Flags().IntVar(&ppid, "pid", 0, "also report this process's CPU per request and memory (the service's pid)")
	cmd.AddCommand(corpus, dnsCmd, mcmd, pcmd, newBenchMTASTSCmd(g), newBenchSTSWorldCmd(g))
	return cmd
}

func newBenchMTASTSCmd(g *globals) *cobra.Command {
	var o stsbench.Options
	var addr, label string
	var pid int
	var fill bool
	cmd := &cobra.Command{
		Use:   "mtasts --addr ADDR [--domains N] [--fill] [--concurrency N] [--duration D] [--pid PID]",
		Short: "Load an MTA-STS socketmap (wehr, postfix-mta-sts-resolver) as Postfix asks it, for the domains of wehr bench sts-world",
		Long: `Asks the socketmap at --addr for random domains of wehr bench sts-world's
workload (--domains of them) over --concurrency connections for --duration,
and reports lookups per second, latency, and the answers (every enforce
domain must get "secure", every testing one NOTFOUND: a wrong answer is
counted). --fill asks for each domain once instead: a cold cache filled;
with --pid it also says how much the process's resident memory grew per
domain.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := listener.ParseAddress(addr, true)
			if err != nil {
				return usagef("--addr: %v", err)
			}
			o.Network, o.Addr = a.Network, a.Address
			if label == "" {
				label = addr
			}
			var m0 loadstat.Memory
			if fill && pid > 0 {
				if m0, err = loadstat.ReadMemory(pid); err != nil {
					return usagef("--pid %d: %v", pid, err)
				}
			}
			var rep *stsbench.Report
			if err := measured(g.stdout, pid, "lookup", func() (n int, err error) {
				if fill {
					rep, err = stsbench.Fill(cmd.Context(), o)
				} else {
					rep, err = stsbench.Run(cmd.Context(), o)
				}
				if err != nil {
					return 0, err
				}
				rep.Print(g.stdout, label)
				return rep.Requests, nil
			}); err != nil {
				return err
			}
			if fill && pid > 0 {
				m1, err := loadstat.ReadMemory(pid)
				if err != nil {
					return err
				}
				per := func(a, b int64) float64 { return float64(b-a) / float64(max(rep.Requests, 1)) }
				fmt.Fprintf(g.stdout, "  memory: anonymous %.1f -> %.1f MB, file-backed %.1f -> %.1f MB; per domain %.0f bytes (anonymous %.0f, file-backed %.0f)\n",
					float64(m0.Anon)/(1<<20), float64(m1.Anon)/(1<<20), float64(m0.File)/(1<<20), float64(m1.File)/(1<<20),
					per(m0.Anon+m0.File, m1.Anon+m1.File), per(m0.Anon, m1.Anon), per(m0.File, m1.File))
			}
			if rep.Errors > 0 || rep.Wrong > 0 {
				return fmt.Errorf("%d lookups failed, %d wrong answers", rep.Errors, rep.Wrong)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "inet:127.0.0.1:10047", "socketmap address, inet:HOST:PORT or unix:/path")
	f.StringVar(&o.Map, "map", "postfix", "the map name Postfix asks for (socketmap:...:NAME)")
	f.IntVar(&o.Concurrency, "concurrency", 16, "connections")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to run (not with --fill)")
	f.IntVar(&o.Domains, "domains", 10000, "how many of sts-world's domains to ask for")
	f.BoolVar(&fill, "fill", false, "ask for each domain once (fill a cold cache) instead of for random ones")
	f.IntVar(&o.First, "first", 0, "with --fill, start at this domain (fill in steps, to see the memory each step adds)")
	f.StringVar(&label, "label", "", "name for the report line")
	f.IntVar(&pid, "pid", 0, "also report this process's CPU per lookup and memory (the service's pid)")
	return cmd
}

func newBenchSTSWorldCmd(g *globals) *cobra.Command {
	var n int
	var dnsAddr, httpsAddr, policyIP, caFile string
	cmd := &cobra.Command{
		Use:   "sts-world --domains N --ca FILE [--dns IP:PORT] [--https IP:PORT]",
		Short: "Serve the DNS and the HTTPS policy host of N MTA-STS domains (wehr bench mtasts's workload) until interrupted",
		Long: `Serves dN.sts.bench.example for N domains: MX, _mta-sts TXT and
mta-sts.DOMAIN records over DNS, and their policies (every tenth in testing
mode, the rest enforce) over HTTPS, each policy host with its own
certificate from a CA made at start and written to --ca. The resolvers
under test must reach the policy host on port 443 of --policy-ip: run it
in a network namespace of its own (scripts/bench-mtasts does).`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caFile == "" {
				return usagef("--ca is required: where to write the CA certificate the resolvers must trust")
			}
			ca, err := stsbench.NewCA()
			if err != nil {
				return err
			}
			if err := os.WriteFile(caFile, ca.PEM, 0o644); err != nil {
				return err
			}
			srv, err := dnstest.StartAt(dnsAddr, stsbench.ZoneText(n, policyIP))
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", httpsAddr)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			h := &stsbench.PolicyHandler{}
			fmt.Fprintf(g.stdout, "serving %d domains: DNS on %s, policies on %s\n", n, srv.Addr(), ln.Addr())
			err = stsbench.ServePolicies(ctx, ln, ca, h)
			fmt.Fprintf(g.stdout, "served %d policies\n", h.Served.Load())
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&n, "domains", 10000, "how many domains")
	f.StringVar(&dnsAddr, "dns", "127.0.0.1:53", "where to serve DNS")
	f.StringVar(&httpsAddr, "https", "127.0.0.1:443", "where to serve the policies")
	f.StringVar(&policyIP, "policy-ip", "127.0.0.1", "the address the mta-sts.DOMAIN records name")
	f.StringVar(&caFile, "ca", "", "file to write the CA certificate to")
	return cmd
}
