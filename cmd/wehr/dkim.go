package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/dkimkeys"
)

func newDKIMCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "dkim",
		Short: "Manage DKIM signing keys: keygen, dns-record, list, status, rotate, sign",
		Long: `Manage the DKIM signing keys in the key directory (dkim.keys_dir, or --dir):
one private key per selector, <dir>/<domain>/<selector>.pem, mode 0600.
After changing keys, send wehr serve a SIGHUP (it also picks up rotations
on its own every dkim.rotation_check).`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "key directory (default: dkim.keys_dir)")
	storeOf := func() (*dkimkeys.Store, error) {
		if dir != "" {
			return &dkimkeys.Store{Dir: dir}, nil
		}
		e, err := g.load()
		if err != nil {
			return nil, err
		}
		if e.cfg.DKIM.KeysDir == "" {
			return nil, usagef("no key directory: set dkim.keys_dir in the config or pass --dir")
		}
		return &dkimkeys.Store{Dir: e.cfg.DKIM.KeysDir}, nil
	}
	printRecords := func(keys []*dkimkeys.Key) {
		for _, k := range keys {
			if g.json {
				json.NewEncoder(g.stdout).Encode(map[string]string{ //nolint:errcheck
					"domain": k.Domain, "selector": k.Selector, "algorithm": k.Algorithm, "state": k.State,
					"name": k.RecordName(), "record": k.Record()})
				continue
			}
			fmt.Fprintf(g.stdout, "; %s %s key, %d bits, %s\n", k.Selector, k.Algorithm, k.Bits, k.State)
			fmt.Fprintf(g.stdout, "%s\n", k.ZoneLine())
			fmt.Fprintf(g.stdout, "; the same as one string, for web panels (name %s):\n; %s\n\n", k.RecordName(), k.Record())
		}
	}

	var selector, algorithm string
	keygen := &cobra.Command{
		Use:   "keygen DOMAIN [--selector S] [--algorithm rsa|ed25519|both]",
		Short: "Make a key pair for a domain and print the DNS records to publish",
		Long: `Make a key pair for DOMAIN and print the TXT record(s) to publish, in zone-file
form (split into strings of at most 255 bytes) and as one string. With
--algorithm both (the default), two selectors: <S>-rsa (RSA 2048) and <S>-ed
(Ed25519); sign with both, as Ed25519 alone is not accepted everywhere.
The default selector is the year and the next free letter, e.g. 2026a.`,
		Args: exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			s, err := storeOf()
			if err != nil {
				return err
			}
			domain := args[0]
			now := time.Now()
			rsaSel, edSel := selector+"-rsa", selector+"-ed"
			if selector == "" {
				if rsaSel, edSel, err = s.NextSelectors(domain, now); err != nil {
					return err
				}
			}
			algs, err := algorithms(algorithm)
			if err != nil {
				return err
			}
			var keys []*dkimkeys.Key
			for _, a := range algs {
				sel := map[string]string{dkimkeys.RSA: rsaSel, dkimkeys.Ed25519: edSel}[a]
				if selector != "" && len(algs) == 1 {
					sel = selector // one key: the selector as given
				}
				k, err := s.Generate(domain, sel, a, dkimkeys.Active, now)
				if err != nil {
					return err
				}
				keys = append(keys, k)
			}
			printRecords(keys)
			return nil
		},
	}
	keygen.Flags().StringVar(&selector, "selector", "", "selector (default: the year and the next free letter)")
	keygen.Flags().StringVar(&algorithm, "algorithm", "both", "rsa, ed25519 or both")

	dnsRecord := &cobra.Command{
		Use:   "dns-record DOMAIN",
		Short: "Print the DNS records of a domain's keys (active, pending and retiring)",
		Args:  exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			s, err := storeOf()
			if err != nil {
				return err
			}
			set, err := s.Load()
			if err != nil {
				return err
			}
			var keys []*dkimkeys.Key
			for _, k := range set.Keys(args[0]) {
				if k.State != dkimkeys.Retired {
					keys = append(keys, k)
				}
			}
			if len(keys) == 0 {
				return fmt.Errorf("no keys for %s in %s", args[0], s.Dir)
			}
			printRecords(keys)
			return nil
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List every domain's keys with their state",
		Args:  exactArgs(0),
		RunE: func(*cobra.Command, []string) error {
			s, err := storeOf()
			if err != nil {
				return err
			}
			set, err := s.Load()
			if err != nil {
				return err
			}
			for _, d := range set.Domains() {
				for _, k := range set.Keys(d) {
					if g.json {
						json.NewEncoder(g.stdout).Encode(map[string]any{"domain": d, "selector": k.Selector, //nolint:errcheck
							"algorithm": k.Algorithm, "bits": k.Bits, "state": k.State, "since": k.Since})
						continue
					}
					since := ""
					if !k.Since.IsZero() {
						since = " since " + k.Since.Format(time.DateOnly)
					}
					fmt.Fprintf(g.stdout, "%-30s %-16s %-8s %5d bits  %s%s\n", d, k.Selector, k.Algorithm, k.Bits, k.State, since)
				}
			}
			return nil
		},
	}

	status := &cobra.Command{
		Use:   "status DOMAIN",
		Short: "Check which selectors DNS publishes and whether they match the keys",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := storeOf()
			if err != nil {
				return err
			}
			e, err := g.load()
			if err != nil {
				return err
			}
			set, err := s.Load()
			if err != nil {
				return err
			}
			keys := set.Keys(args[0])
			if len(keys) == 0 {
				return fmt.Errorf("no keys for %s in %s", args[0], s.Dir)
			}
			for _, k := range keys {
				ok, why := dkimkeys.Published(cmd.Context(), e.res, k)
				advice := k.Advice(ok)
				if g.json {
					json.NewEncoder(g.stdout).Encode(map[string]any{"selector": k.Selector, "state": k.State, //nolint:errcheck
						"published": ok, "detail": why, "advice": advice})
					continue
				}
				fmt.Fprintf(g.stdout, "%-16s %-8s published=%-5v %s\n", k.Selector, k.State, ok, why)
				if advice != "" {
					fmt.Fprintf(g.stdout, "  %s\n", advice)
				}
			}
			return nil
		},
	}

	var rotAlg string
	rotate := &cobra.Command{
		Use:   "rotate DOMAIN [--algorithm rsa|ed25519|both]",
		Short: "Start a key rotation: new dated selectors, pending until DNS shows them",
		Long: `Start a key rotation for DOMAIN: new dated selector(s) of the algorithms the
domain signs with now (or --algorithm), in state pending. The old keys keep
signing until wehr sees the new records in DNS; then the new keys sign and
the old ones retire after dkim.rotation_overlap. Publish the printed
records, then wait (or run 'wehr dkim advance').`,
		Args: exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			s, err := storeOf()
			if err != nil {
				return err
			}
			var algs []string // none: what the domain signs with now
			if rotAlg != "" {
				if algs, err = algorithms(rotAlg); err != nil {
					return err
				}
			}
			keys, err := s.Rotate(args[0], algs, time.Now())
			if err != nil {
				return err
			}
			printRecords(keys)
			return nil
		},
	}
	rotate.Flags().StringVar(&rotAlg, "algorithm", "", "rsa, ed25519 or both (default: what the domain signs with now)")

	advance := &cobra.Command{
		Use:   "advance",
		Short: "Move key rotations on now, as wehr serve does on its schedule",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := storeOf()
			if err != nil {
				return err
			}
			e, err := g.load()
			if err != nil {
				return err
			}
			trs, err := s.Advance(cmd.Context(), e.res, e.cfg.DKIM.RotationOverlap, time.Now())
			if g.json {
				out := []map[string]string{}
				for _, t := range trs {
					out = append(out, map[string]string{"domain": t.Domain, "selector": t.Selector, "from": t.From, "to": t.To, "why": t.Why})
				}
				if jerr := json.NewEncoder(g.stdout).Encode(out); jerr != nil {
					return jerr
				}
				return err
			}
			for _, t := range trs {
				fmt.Fprintf(g.stdout, "%s %s: %s -> %s (%s)\n", t.Domain, t.Selector, t.From, t.To, t.Why)
			}
			if len(trs) == 0 && err == nil {
				fmt.Fprintln(g.stdout, "nothing to do")
			}
			return err
		},
	}

	var signDomain, signSelector, signKey string
	sign := &cobra.Command{
		Use:   "sign --domain D --selector S --key FILE [FILE|-]",
		Short: "Sign a message (file or standard input) and print it with the signature",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("at most one FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = g.stdin
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return usageError{err}
				}
				defer f.Close()
				in = f
			}
			data, err := io.ReadAll(in)
			if err != nil {
				return err
			}
			k, err := dkimkeys.LoadKey(signKey)
			if err != nil {
				return usageError{err}
			}
			k.Domain, k.Selector = signDomain, signSelector
			sigs, err := dkimkeys.Sign(cmd.Context(), bytes.NewReader(crlf(data)), signDomain, []*dkimkeys.Key{k}, 0)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "DKIM-Signature:%s\r\n", sigs[0])
			_, err = g.stdout.Write(crlf(data))
			return err
		},
	}
	sign.Flags().StringVar(&signDomain, "domain", "", "signing domain, d= (required)")
	sign.Flags().StringVar(&signSelector, "selector", "", "selector, s= (required)")
	sign.Flags().StringVar(&signKey, "key", "", "private key file, PEM (required)")
	for _, f := range []string{"domain", "selector", "key"} {
		sign.MarkFlagRequired(f) //nolint:errcheck
	}

	cmd.AddCommand(keygen, dnsRecord, list, status, rotate, advance, sign)
	return cmd
}

// algorithms reads an --algorithm flag: rsa, ed25519 or both (RSA first,
// the order signatures are added in).
func algorithms(flag string) ([]string, error) {
	switch flag {
	case "both":
		return []string{dkimkeys.RSA, dkimkeys.Ed25519}, nil
	case dkimkeys.RSA, dkimkeys.Ed25519:
		return []string{flag}, nil
	}
	return nil, usagef("--algorithm %q: want rsa, ed25519 or both", flag)
}

// crlf makes line endings CRLF.
func crlf(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}
