package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wehr/wehr/explain"
)

func newExplainCmd(g *globals) *cobra.Command {
	var logFile, unit, since string
	cmd := &cobra.Command{
		Use:   "explain QUEUEID|MESSAGE-ID",
		Short: "Say in plain words why a message was accepted, quarantined, greylisted or refused",
		Long: `Finds the message's lines in wehr's log, by Postfix queue id (the hex id in
Postfix's log) or Message-ID, and says what the policy service answered at RCPT
and what the milter decided, with the checks that decided. The log is the
systemd journal of the wehr unit (journalctl -u wehr) unless --log names a
file.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			open := func() (io.Reader, error) {
				if logFile != "" {
					b, err := os.ReadFile(logFile)
					return bytes.NewReader(b), err
				}
				return journal(cmd.Context(), unit, since)
			}
			id := args[0]
			if strings.Contains(id, "@") {
				r, err := open()
				if err != nil {
					return err
				}
				qid, err := explain.QueueID(r, id)
				if err != nil {
					return err
				}
				if qid == "" {
					explain.Explain(g.stdout, explain.Story{})
					return nil
				}
				id = qid
			}
			r, err := open()
			if err != nil {
				return err
			}
			st, err := explain.Find(r, id)
			if err != nil {
				return err
			}
			explain.Explain(g.stdout, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&logFile, "log", "", "read this log file instead of the journal")
	cmd.Flags().StringVar(&unit, "unit", "wehr", "the systemd unit whose journal is read")
	cmd.Flags().StringVar(&since, "since", "-3d", "how far back the journal is read (journalctl --since)")
	return cmd
}

// journal returns the unit's journal, as wehr wrote it.
func journal(ctx context.Context, unit, since string) (io.Reader, error) {
	if _, err := exec.LookPath("journalctl"); err != nil {
		return nil, usagef("no journalctl here: give the log file with --log")
	}
	out, err := exec.CommandContext(ctx, "journalctl", "-u", unit, "-o", "cat", "--no-pager", "--since", since).Output()
	if err != nil {
		return nil, usagef("journalctl -u %s: %v (give the log file with --log)", unit, err)
	}
	return bytes.NewReader(out), nil
}
