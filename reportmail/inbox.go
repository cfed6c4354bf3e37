package reportmail

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// ErrTryLater wraps what keeps a report from being taken now (the store,
// the failed folder): a Postfix pipe answers EX_TEMPFAIL, and the report
// comes again.
var ErrTryLater = errors.New("try later")

func tryLater(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTryLater, fmt.Sprintf(format, args...))
}

// StoreError wraps what the store refused while a report was taken:
// the report is fine, try again later (sysexits 75 for Postfix).
type StoreError struct{ Err error }

func (e StoreError) Error() string { return "store: " + e.Err.Error() }
func (e StoreError) Unwrap() error { return e.Err }

// Unreadable says whether err is about the report itself (keep it aside
// with the reason) rather than about the store (try again later).
func Unreadable(err error) bool {
	var se StoreError
	return err != nil && !errors.As(err, &se) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// Taken says what became of one report.
type Taken struct {
	// Duplicate: the report was stored before (same reporter and report
	// id); nothing changed.
	Duplicate bool
	// What names the report for the admin ("report 123 from Google about
	// example.com: 4 records, 10 messages (id)").
	What string
	// Attrs are the log attributes of the report (domain, org, ...).
	Attrs []any
}

// Taker stores the one report r holds; an error that is not a
// StoreError (nor the context's) says the report cannot be read.
type Taker func(ctx context.Context, r io.Reader) (Taken, error)

// Inbox takes received reports as mail delivers them: one message at a
// time (a Postfix pipe transport) or a Maildir. A report that cannot be
// read is kept in Failed with the reason, never bounced to its sender.
type Inbox struct {
	Kind   string // "dmarc" or "tlsrpt", for the log
	Take   Taker
	Failed string // the folder for unreadable reports
	Log    *slog.Logger
	Out    io.Writer // a line per report, for the admin
}

// spool copies r into a new file in the failed folder, so that a report
// that cannot be read is kept whole; the caller removes it otherwise.
func (in *Inbox) spool(r io.Reader) (string, error) {
	if err := os.MkdirAll(in.Failed, 0o750); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(in.Failed, ".incoming-*")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), f.Close()
}

// failedName is a new name in the failed folder: ours, never one the
// report's sender chose.
func failedName() string {
	var b [4]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:]) + ".eml"
}

// keep moves path into the failed folder with the reason beside it.
func (in *Inbox) keep(path, source string, why error) (string, error) {
	dst := filepath.Join(in.Failed, failedName())
	if err := os.Rename(path, dst); err != nil {
		return "", err
	}
	reason := fmt.Sprintf("%s\n%s\n%v\n", time.Now().UTC().Format(time.RFC3339), source, why)
	if err := os.WriteFile(dst+".reason", []byte(reason), 0o640); err != nil {
		return dst, err
	}
	return dst, nil
}

// Failure is a report kept in the failed folder, as keep wrote it: its
// file, when, where from, and why it could not be read.
type Failure struct {
	File, When, Source, Reason string
}

// Failures reads the failed folder dir's reasons, the newest first, at
// most max of them, and says how many there are in all.
func Failures(dir string, max int) ([]Failure, int, error) {
	if dir == "" {
		return nil, 0, nil
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.reason"))
	if err != nil {
		return nil, 0, err
	}
	// The names start with the UTC time they were kept at (failedName).
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	var out []Failure
	for _, n := range names[:min(len(names), max)] {
		f := Failure{File: strings.TrimSuffix(filepath.Base(n), ".reason")}
		if fh, err := os.Open(n); err == nil {
			sc := bufio.NewScanner(fh)
			sc.Buffer(make([]byte, 4096), 64<<10)
			for _, field := range []*string{&f.When, &f.Source, &f.Reason} {
				if !sc.Scan() {
					break
				}
				*field = clip(sc.Text())
			}
			fh.Close()
		}
		out = append(out, f)
	}
	return out, len(names), nil
}

// clip bounds what a kept reason says (the source and the error may
// quote the sender) for a page.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100]
	}
	return s
}

func (in *Inbox) report(name string, res Taken) {
	log := in.Log.With("source", name).With(res.Attrs...)
	if res.Duplicate {
		log.Info(in.Kind + " ingest: duplicate report, already stored")
		fmt.Fprintf(in.Out, "%s: duplicate: %s is already stored\n", name, res.What)
		return
	}
	log.Info(in.Kind + " ingest: report stored")
	fmt.Fprintf(in.Out, "%s: stored %s\n", name, res.What)
}

// One takes one report (an email or a bare file) from r. It returns nil
// when the report was stored, was a duplicate, or was kept aside as
// unreadable; an error wrapping ErrTryLater when it must come again.
func (in *Inbox) One(ctx context.Context, r io.Reader, name string) error {
	path, err := in.spool(r)
	if err != nil {
		return tryLater("cannot keep the report in %s while it is read: %v", in.Failed, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return tryLater("%v", err)
	}
	res, err := in.Take(ctx, f)
	f.Close()
	if err == nil {
		os.Remove(path)
		in.report(name, res)
		return nil
	}
	if !Unreadable(err) {
		os.Remove(path)
		in.Log.Warn(in.Kind+" ingest: the store did not take the report; Postfix will try again", "source", name, "error", err)
		return tryLater("%v", err)
	}
	dst, kerr := in.keep(path, name, err)
	if kerr != nil {
		return tryLater("the report cannot be read (%v), and cannot be kept aside: %v", err, kerr)
	}
	in.Log.Warn(in.Kind+" ingest: report cannot be read; kept aside", "source", name, "kept", dst, "error", err)
	fmt.Fprintf(in.Out, "%s: cannot be read, kept as %s: %v\n", name, dst, err)
	return nil
}

// Maildir takes every message in dir/new: a stored (or duplicate)
// report's message moves to cur/, an unreadable one to the failed
// folder with the reason; a store failure stops the run (ErrTryLater)
// with the rest left in new/.
func (in *Inbox) Maildir(ctx context.Context, dir string) error {
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		return fmt.Errorf("maildir: %w", err)
	}
	if err := os.MkdirAll(in.Failed, 0o750); err != nil {
		return tryLater("failed folder: %v", err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	stored, dup, bad := 0, 0, 0
	for _, de := range ents {
		if de.IsDir() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, "new", de.Name())
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		res, err := in.Take(ctx, f)
		f.Close()
		switch {
		case err == nil:
			in.report(de.Name(), res)
			if res.Duplicate {
				dup++
			} else {
				stored++
			}
			// Seen, in cur/ (the Maildir convention).
			if err := os.Rename(path, filepath.Join(dir, "cur", de.Name()+":2,S")); err != nil {
				return fmt.Errorf("maildir: %w", err)
			}
		case Unreadable(err):
			bad++
			dst, kerr := in.keep(path, de.Name(), err)
			if kerr != nil {
				return fmt.Errorf("maildir: %w", kerr)
			}
			in.Log.Warn(in.Kind+" ingest: report cannot be read; kept aside", "source", de.Name(), "kept", dst, "error", err)
			fmt.Fprintf(in.Out, "%s: cannot be read, kept as %s: %v\n", de.Name(), dst, err)
		default:
			return tryLater("%s: %v (it stays in new/; run again)", de.Name(), err)
		}
	}
	fmt.Fprintf(in.Out, "maildir %s: %d stored, %d duplicates, %d unreadable\n", dir, stored, dup, bad)
	return nil
}
