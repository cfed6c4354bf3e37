package dmarcreport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wehr/wehr/store"
)

// SendLock is the store lock that lets one node at a time send.
const SendLock = "dmarc-report-send"

// CatchUp is how far back unsent periods are still sent: a sender that
// was stopped for a weekend sends the weekend's reports, one that was
// off for weeks does not flood the domain owners with stale ones.
const CatchUp = 3 * 24 * time.Hour

// ErrBusy says another node, or another process here, is sending.
var ErrBusy = errors.New("dmarcreport: another node or process is sending reports (the send lock is held)")

// LocalLockPath is the local send lock beside the store's file (its
// folder is the node's state directory, whatever the backend).
func LocalLockPath(storePath string) string {
	return filepath.Join(filepath.Dir(storePath), "dmarc-report-send.lock")
}

// flock takes the exclusive lock of the file at path, without waiting.
func flock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dmarcreport: local send lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("dmarcreport: local send lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// Signer signs a composed report message; it returns the
// DKIM-Signature field values to prepend (none when it has no key for
// the domain).
type Signer func(ctx context.Context, msg []byte, fromDomain string) ([]string, error)

// Sender sends the aggregate reports of finished periods.
type Sender struct {
	Config Config
	Store  store.Store
	DNS    TXTResolver
	Sign   Signer // nil: unsigned
	Log    *slog.Logger
	// Hostname is the EHLO name and the owner of the store's lock.
	Hostname string
	// DryRun, when set, writes each report (.xml.gz) and each message
	// (.eml) into this folder instead of sending, and marks nothing.
	DryRun string
	// Domain limits the run to one policy domain.
	Domain string
	// LocalLock is a file whose lock (flock) lets one process of this
	// node send at a time; the store's lock, held in the host's name,
	// lets one node send. A process that crashed holding them stops
	// neither: the kernel drops its file lock, and the next process of
	// the same host renews the store's lock.
	LocalLock string
	// dial opens the SMTP connection (tests replace it).
	dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Outcome counts what a run did.
type Outcome struct {
	Reports, Sent, Refused, Skipped, Deferred int
}

// Periods returns the finished periods [begin, end) of length period
// that end by until and after until-CatchUp, oldest first.
func Periods(until time.Time, period time.Duration) [][2]time.Time {
	until = until.UTC()
	end := until.Truncate(period) // periods divide a day: aligned to midnight UTC
	var out [][2]time.Time
	for e := end; e.After(until.Add(-CatchUp)); e = e.Add(-period) {
		out = append([][2]time.Time{{e.Add(-period), e}}, out...)
	}
	return out
}

// Run sends every report of the periods finished by until that has a
// destination without a mark. It holds the store's send lock while it
// works and stops when the lock is lost. A temporary failure (DNS, the
// relay, the store) leaves the report for the next run.
func (s *Sender) Run(ctx context.Context, until time.Time) (Outcome, error) {
	var out Outcome
	owner := s.Hostname
	lease := 10 * time.Minute
	token := int64(0)
	if s.DryRun == "" {
		if s.LocalLock != "" {
			unlock, err := flock(s.LocalLock)
			if err != nil {
				return out, err
			}
			defer unlock()
		}
		t, ok, err := s.Store.Lock(ctx, SendLock, owner, time.Now(), lease)
		if err != nil {
			return out, fmt.Errorf("dmarcreport: send lock: %w", err)
		}
		if !ok {
			return out, ErrBusy
		}
		token = t
		defer s.Store.Unlock(context.WithoutCancel(ctx), SendLock, owner)
	}
	rows := store.NewReportRows(s.Store)
	marks := store.NewReportMarks(s.Store)
	sup := store.NewSuppressions(s.Store)
	domains := []string{strings.ToLower(s.Domain)}
	if s.Domain == "" {
		var err error
		if domains, err = rows.Domains(ctx); err != nil {
			return out, fmt.Errorf("dmarcreport: list domains: %w", err)
		}
	}
	meta := s.Config.Meta()
	pace := time.Duration(float64(time.Second) / s.Config.Rate)
	var lastSend time.Time
	periods := Periods(until, s.Config.Period)
	if len(periods) == 0 {
		return out, nil
	}
	for _, domain := range domains {
		// A domain's rows of every period at once (one scan of the
		// store); Build takes each period's share.
		all, err := rows.Rows(ctx, domain, periods[0][0], periods[len(periods)-1][1])
		if err != nil {
			return out, fmt.Errorf("dmarcreport: rows of %s: %w", domain, err)
		}
		for _, p := range periods {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			begin, end := p[0], p[1]
			log := s.Log.With("domain", domain, "period_begin", begin.Format(time.RFC3339))
			f, err := Build(meta, domain, begin, end, all)
			if err != nil {
				log.Error("dmarc report: cannot build", "error", err)
				continue
			}
			if f == nil {
				continue
			}
			dests, skipped, err := Destinations(ctx, s.DNS, domain, f.RUA)
			if err != nil {
				log.Warn("dmarc report: destinations not verified; trying again next run", "error", err)
				out.Deferred++
				continue
			}
			gz, err := f.Gzip()
			if err != nil {
				return out, err
			}
			out.Reports++
			if s.DryRun != "" {
				if err := s.writeDry(meta, f, gz, dests, skipped, until); err != nil {
					return out, err
				}
				continue
			}
			for _, sk := range skipped {
				// Logged each run while the period is sendable: the owner
				// may fix the record in time.
				log.Info("dmarc report: destination skipped", "rua", sk.URI, "reason", sk.Why)
				out.Skipped++
			}
			for _, d := range dests {
				if _, ok, err := marks.Get(ctx, domain, begin, d.Address); err != nil {
					return out, fmt.Errorf("dmarcreport: marks: %w", err)
				} else if ok {
					continue
				}
				mark := store.ReportMark{Domain: domain, Begin: begin, Address: d.Address, ReportID: f.Metadata.ReportID, Token: token}
				suppressed := s.suppressed(d.Address)
				if !suppressed {
					if suppressed, err = sup.Has(ctx, d.Address); err != nil {
						return out, fmt.Errorf("dmarcreport: suppression list: %w", err)
					}
				}
				em := Compose(meta, f, gz, d.Address, time.Now())
				raw, err := s.signed(ctx, em.Raw)
				if err != nil {
					log.Error("dmarc report: cannot sign; sending unsigned", "error", err)
					raw = em.Raw
				}
				switch {
				case suppressed:
					mark.Status, mark.Detail = "suppressed", "the address is on the suppression list"
				case d.MaxSize > 0 && int64(len(raw)) > d.MaxSize:
					mark.Status, mark.Detail = "too_large", fmt.Sprintf("%d bytes, the destination takes %d", len(raw), d.MaxSize)
				default:
					// Pace, and make sure we still hold the lock: a node
					// that lost it stops before sending a duplicate.
					if wait := time.Until(lastSend.Add(pace)); wait > 0 {
						select {
						case <-time.After(wait):
						case <-ctx.Done():
							return out, ctx.Err()
						}
					}
					if t, ok, err := s.Store.Lock(ctx, SendLock, owner, time.Now(), lease); err != nil {
						return out, fmt.Errorf("dmarcreport: send lock: %w", err)
					} else if !ok || t != token {
						return out, fmt.Errorf("dmarcreport: the send lock was lost (token %d, now %d): stopping", token, t)
					}
					lastSend = time.Now()
					err := s.deliver(ctx, d.Address, raw)
					var pe permanentError
					switch {
					case err == nil:
						mark.Status = "sent"
					case errors.As(err, &pe):
						mark.Status, mark.Detail = "refused", err.Error()
					default:
						log.Warn("dmarc report: relay did not take the report; trying again next run",
							"to", d.Address, "report_id", f.Metadata.ReportID, "error", err)
						out.Deferred++
						continue
					}
				}
				mark.At, mark.Size = time.Now().UTC(), len(raw)
				if err := marks.Put(ctx, mark); err != nil {
					// Sent but not marked: the next run sends it again, with
					// the same report id.
					return out, fmt.Errorf("dmarcreport: mark %s to %s: %w", f.Metadata.ReportID, d.Address, err)
				}
				switch mark.Status {
				case "sent":
					out.Sent++
					log.Info("dmarc report sent", "to", d.Address, "report_id", f.Metadata.ReportID,
						"records", len(f.Records), "bytes", len(raw), "relay", s.Config.Relay)
				case "refused":
					out.Refused++
					log.Warn("dmarc report refused by the relay; not sent again", "to", d.Address,
						"report_id", f.Metadata.ReportID, "error", mark.Detail)
				default:
					out.Skipped++
					log.Info("dmarc report not sent", "to", d.Address, "report_id", f.Metadata.ReportID,
						"status", mark.Status, "detail", mark.Detail)
				}
			}
		}
	}
	return out, nil
}

func (s *Sender) suppressed(addr string) bool {
	for _, a := range s.Config.Suppress {
		if strings.EqualFold(strings.TrimSpace(a), addr) {
			return true
		}
	}
	return false
}

func (s *Sender) signed(ctx context.Context, raw []byte) ([]byte, error) {
	if s.Sign == nil {
		return raw, nil
	}
	sigs, err := s.Sign(ctx, raw, hostOf(s.Config.From))
	if err != nil || len(sigs) == 0 {
		return raw, err
	}
	var b bytes.Buffer
	for _, v := range sigs {
		b.WriteString("DKIM-Signature:" + v + "\r\n")
	}
	b.Write(raw)
	return b.Bytes(), nil
}

// writeDry writes what would be sent into the dry-run folder.
func (s *Sender) writeDry(meta Meta, f *Feedback, gz []byte, dests []Destination, skipped []Skipped, now time.Time) error {
	if err := os.MkdirAll(s.DryRun, 0o755); err != nil {
		return fmt.Errorf("dmarcreport: dry run: %w", err)
	}
	name := Filename(meta.Submitter, f.Policy.Domain, time.Unix(f.Metadata.DateRange.Begin, 0), time.Unix(f.Metadata.DateRange.End+1, 0))
	if err := os.WriteFile(filepath.Join(s.DryRun, name), gz, 0o644); err != nil {
		return fmt.Errorf("dmarcreport: dry run: %w", err)
	}
	for i, d := range dests {
		em := Compose(meta, f, gz, d.Address, now)
		p := filepath.Join(s.DryRun, fmt.Sprintf("%s.%d.eml", strings.TrimSuffix(name, ".xml.gz"), i+1))
		if err := os.WriteFile(p, em.Raw, 0o644); err != nil {
			return fmt.Errorf("dmarcreport: dry run: %w", err)
		}
		s.Log.Info("dmarc report (dry run)", "domain", f.Policy.Domain, "to", d.Address, "file", p)
	}
	for _, sk := range skipped {
		s.Log.Info("dmarc report (dry run): destination skipped", "domain", f.Policy.Domain, "rua", sk.URI, "reason", sk.Why)
	}
	return nil
}

// permanentError is a 5xx answer of the relay: the report is not sent
// again.
type permanentError struct{ error }

// deliver hands one message to the relay; a 5xx answer is a
// permanentError, anything else that fails is temporary.
func (s *Sender) deliver(ctx context.Context, to string, raw []byte) error {
	dial := s.dial
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	conn, err := dial(ctx, s.Config.Relay)
	if err != nil {
		return fmt.Errorf("relay %s: %w", s.Config.Relay, err)
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	host, _, _ := net.SplitHostPort(s.Config.Relay)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return classify(err)
	}
	defer c.Close()
	if err := c.Hello(s.Hostname); err != nil {
		return classify(err)
	}
	if err := c.Mail(s.Config.From); err != nil {
		return classify(err)
	}
	if err := c.Rcpt(to); err != nil {
		return classify(err)
	}
	w, err := c.Data()
	if err != nil {
		return classify(err)
	}
	if _, err := w.Write(raw); err != nil {
		return classify(err)
	}
	if err := w.Close(); err != nil { // the relay's answer to the message
		return classify(err)
	}
	c.Quit()
	return nil
}

func classify(err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return permanentError{fmt.Errorf("relay: %w", err)}
	}
	return fmt.Errorf("relay: %w", err)
}
