// Command wehr authenticates mail beside Postfix and Dovecot: SPF, DKIM
// and DMARC verdicts in Authentication-Results, DKIM signing, and spam
// defence before acceptance. See README.md.
//
// Exit status: 0 when the command did its job (for checks: a verdict was
// produced, whatever it is), 1 on a runtime error, 2 on a usage or
// configuration error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	var lines interface{ Lines() []string }
	if ok := asLines(err, &lines); ok {
		for _, l := range lines.Lines() {
			fmt.Fprintln(stderr, l)
		}
	} else {
		fmt.Fprintf(stderr, "wehr: %v\n", err)
	}
	if code == exitUsage && isCobraUsage(err) {
		fmt.Fprintln(stderr, "Run 'wehr --help' for usage.")
	}
	return code
}
