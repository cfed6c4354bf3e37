package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/config"
	"github.com/wehr/wehr/resolver"
)

const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// usageError marks a wrong command line: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError carries an exit status of its own (sysexits for a Postfix
// pipe transport).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var xe exitError
	if errors.As(err, &xe) {
		return xe.code
	}
	var ue usageError
	var ce *config.Errors
	if errors.As(err, &ue) || errors.As(err, &ce) || isCobraUsage(err) {
		return exitUsage
	}
	return exitRuntime
}

// isCobraUsage recognises cobra's own command-line errors, which it
// returns as plain errors.
func isCobraUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "required flag", "accepts ", "requires at least", "invalid argument", "flag needs an argument", "bad flag syntax"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func asLines(err error, target *interface{ Lines() []string }) bool {
	var ce *config.Errors
	if errors.As(err, &ce) {
		*target = ce
		return true
	}
	return false
}

// globals are the flags every command has.
type globals struct {
	configPath string
	resolver   string
	json       bool
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "wehr",
		Short: "Mail authentication beside Postfix and Dovecot: SPF, DKIM, DMARC, spam defence",
		Long: `wehr authenticates incoming mail (SPF, DKIM, DMARC) and writes the verdict
as an Authentication-Results header, signs outgoing mail with DKIM, and turns
away spam bots and forgeries before a message is accepted.

Exit status: 0 when the command did its job (a check produced a verdict,
whatever it is), 1 on a runtime error, 2 on a usage or configuration error.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "configuration file (default "+config.DefaultPath+" if it exists, else built-in defaults)")
	pf.StringVar(&g.resolver, "resolver", "", "send every DNS query to this server, IP:PORT (overrides dns.servers)")
	pf.BoolVar(&g.json, "json", false, "print results as JSON")

	root.AddCommand(newCheckCmd(g), newConfigCmd(g), newMilterCmd(g), newServeCmd(g), newDKIMCmd(g), newBenchCmd(g),
		newPolicydCmd(g), newGreylistCmd(g), newReputationCmd(g), newDoctorCmd(g), newDMARCCmd(g), newAuthPolicyCmd(g), newMTASTSCmd(g), newTLSRPTCmd(g), newWebCmd(g), newExplainCmd(g), newManCmd(root))
	return root
}

// env is what a command gets from the global flags: the validated config,
// a logger and the resolver.
type env struct {
	cfg  *config.Config
	path string // the config file read; "" for built-in defaults
	log  *slog.Logger
	res  *resolver.Resolver
}

func (g *globals) load() (*env, error) {
	if g.resolver != "" {
		if err := config.CheckServer(g.resolver); err != nil {
			return nil, usageError{err}
		}
	}
	cfg, path, err := config.LoadDefault(g.configPath)
	if err != nil {
		var ce *config.Errors
		if errors.As(err, &ce) {
			return nil, err
		}
		return nil, usageError{err}
	}
	log := newLogger(g.stderr, cfg.Log)
	rc := cfg.DNS
	if g.resolver != "" {
		rc.Servers = []string{g.resolver}
	}
	res, err := resolver.New(rc)
	if err != nil {
		return nil, err
	}
	return &env{cfg: cfg, path: path, log: log, res: res}, nil
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}
