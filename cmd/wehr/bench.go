package main

import (
	"fmt"
	"io"
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
	cmd.AddCommand(corpus, dnsCmd, mcmd, pcmd)
	return cmd
}
