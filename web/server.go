// Package web is the web view of the reports: per domain, the DMARC
// (and TLS) reports received about it and those we sent, as charts and
// tables rendered on the server (no script needed), for the domain's
// owner with a token of their own and for the admin. Read-only: every
// page is a GET; a token sees its domains and nothing of the others,
// not even through an id in a URL.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wehr/wehr/dmarcreport"
	"github.com/wehr/wehr/listener"
	"github.com/wehr/wehr/mailauth"
	"github.com/wehr/wehr/mtasts"
	"github.com/wehr/wehr/store"
	"github.com/wehr/wehr/tlsrpt"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/style.css
var styleCSS []byte

// Checker looks at what a domain publishes (wehr check domain's engine).
type Checker interface {
	CheckDomain(ctx context.Context, domain string, selectors []string) mailauth.DomainReport
}

// DNS is what the pages need of wehr's resolver: the names of sending
// addresses, and the domain's MTA-STS and TLS-RPT records.
type DNS interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Transport is what a domain publishes for the security of the mail
// sent to it: its MTA-STS record and where it wants TLS reports.
type Transport struct {
	STSID, STSProblem string
	TLSRPT            []string
	TLSRPTProblem     string
}

// transport looks up domain's _mta-sts and _smtp._tls records.
func transport(ctx context.Context, res DNS, domain string) Transport {
	var t Transport
	txts, err := res.LookupTXT(ctx, "_mta-sts."+domain)
	if err == nil {
		var rec mtasts.Record
		if rec, err = mtasts.SelectRecord(txts); err == nil {
			t.STSID = rec.ID
		}
	}
	if err != nil {
		t.STSProblem = clip(err.Error())
	}
	txts, err = res.LookupTXT(ctx, "_smtp._tls."+domain)
	if err == nil {
		t.TLSRPT, err = tlsrpt.SelectRecord(txts)
	}
	if err != nil {
		t.TLSRPTProblem = clip(err.Error())
	}
	return t
}

// Server serves the web view.
type Server struct {
	cfg   Config
	st    store.Store
	check Checker // nil: the published records are not shown
	dns   DNS     // nil: no PTR names, no MTA-STS or TLS-RPT records
	log   *slog.Logger
	pages *template.Template
	now   func() time.Time

	// FailedDir is reports.failed: the admin page lists what is in it.
	FailedDir string

	tokens atomic.Pointer[readers] // SetTokens replaces them on reload

	mu     sync.Mutex
	recent map[string]*overview // per domain, the last one computed
}

// SetTokens makes tokens (web.tokens, checked) the ones that are let in,
// at once: a reload's new and removed tokens take effect on the next
// request.
func (s *Server) SetTokens(tokens []Token) {
	rs := newReaders(tokens)
	s.tokens.Store(&rs)
}

// overview is what a domain's page shows, computed once and kept while
// no report of the domain is stored (its generation), and at most
// overviewKeep: reports never change once stored.
type overview struct {
	gen     int64 // dmarcreport.Generation
	at      time.Time
	sum     dmarcreport.Summary
	reports []dmarcreport.ReportLine // the latest 200
}

const overviewKeep = 10 * time.Minute

// maxOverviews bounds the domains kept.
const maxOverviews = 1000

// New is the web view of the reports in st; dns (may be nil) names the
// sending addresses and finds the domain's MTA-STS and TLS-RPT records,
// check (may be nil) reads what else a domain publishes.
func New(cfg Config, st store.Store, dns DNS, check Checker, log *slog.Logger) (*Server, error) {
	t, err := template.New("").Funcs(template.FuncMap{
		"date":    func(unix int64) string { return time.Unix(unix, 0).UTC().Format("2006-01-02 15:04") },
		"when":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04") },
		"percent": percent,
		"join":    strings.Join,
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: templates: %w", err)
	}
	s := &Server{cfg: cfg, st: st, dns: dns, check: check, log: log, pages: t, now: time.Now, recent: map[string]*overview{}}
	s.SetTokens(cfg.Tokens)
	return s, nil
}

func percent(part, whole int64) string {
	if whole <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f %%", 100*float64(part)/float64(whole))
}

// Keep is how far back the pages look: as long as reports are kept.
const Keep = dmarcreport.ReceivedKeep

// Handler is the web view's routes, behind the token check and the
// security headers.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /admin", s.admin)
	mux.HandleFunc("GET /domain/{domain}/{$}", s.domain)
	mux.HandleFunc("GET /domain/{domain}/report/{id}", s.report)
	mux.HandleFunc("GET /domain/{domain}/report/{id}/download", s.download)
	mux.HandleFunc("GET /domain/{domain}/report/{id}/file", s.file)
	mux.HandleFunc("GET /style.css", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Write(styleCSS)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Nothing from elsewhere, no script at all, no framing.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the web view is read-only", http.StatusMethodNotAllowed)
			return
		}
		rd := s.tokens.Load().match(token(r))
		if rd == nil {
			h.Set("WWW-Authenticate", `Basic realm="wehr reports", charset="UTF-8"`)
			http.Error(w, "a token is needed: the password of this page's login, or Authorization: Bearer TOKEN", http.StatusUnauthorized)
			s.log.Info("web: refused: no valid token", "path", r.URL.Path, "remote", r.RemoteAddr)
			return
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), readerKey{}, rd)))
	})
}

type readerKey struct{}

func readerOf(r *http.Request) *reader { return r.Context().Value(readerKey{}).(*reader) }

// token is the request's token: the password of Basic authentication
// (the user name is not looked at) or a Bearer token.
func token(r *http.Request) string {
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// domainOf is the {domain} of the URL if the reader may see it; else it
// answers 404 (not 403: another customer's domain is not confirmed to
// exist) and returns "".
func (s *Server) domainOf(w http.ResponseWriter, r *http.Request) string {
	d := strings.ToLower(strings.TrimSuffix(r.PathValue("domain"), "."))
	if d == "" || !readerOf(r).sees(d) {
		s.log.Info("web: refused: domain not shown to this token", "domain", clip(d), "token", readerOf(r).name)
		http.NotFound(w, r)
		return ""
	}
	return d
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100]
	}
	return s
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.pages.ExecuteTemplate(w, name, data); err != nil {
		s.log.Error("web: rendering", "page", name, "error", err)
	}
}

func (s *Server) fail(w http.ResponseWriter, what string, err error) {
	s.log.Error("web: "+what, "error", err)
	http.Error(w, what+" failed (wehr's log says why, under \"web: "+what+"\"); try again later", http.StatusServiceUnavailable)
}

// DomainRow is a line of the index.
type DomainRow struct {
	Domain           string
	Reports          int
	Messages, Fail   int64
	TLSReports       int
	TLSFailed, TLSOK int64
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	rd := readerOf(r)
	since := s.now().Add(-Keep)
	rows := map[string]*DomainRow{}
	for d := range rd.domains {
		rows[d] = &DomainRow{Domain: d}
	}
	// The admin's index reads every domain's reports; a customer's only
	// the token's domains'.
	scopes := []string{""}
	if !rd.admin {
		scopes = scopes[:0]
		for d := range rd.domains {
			scopes = append(scopes, d)
		}
	}
	dmarcDomains := scopes
	if rd.admin {
		var err error
		if dmarcDomains, err = store.NewReceivedReports(s.st, dmarcreport.ReceivedKeep).Domains(r.Context()); err != nil {
			s.fail(w, "reading the reports", err)
			return
		}
	}
	for _, d := range dmarcDomains {
		t, err := dmarcreport.Totals(r.Context(), s.st, d, since)
		if err != nil {
			s.fail(w, "reading the reports", err)
			return
		}
		if rows[d] == nil {
			rows[d] = &DomainRow{Domain: d}
		}
		rows[d].Reports, rows[d].Messages, rows[d].Fail = t.Reports, t.Messages, t.Fail
	}
	for _, scope := range scopes {
		treps, err := tlsrpt.Reports(r.Context(), s.st, scope, since)
		if err != nil {
			s.fail(w, "reading the TLS reports", err)
			return
		}
		for _, x := range treps {
			if rows[x.Domain] == nil {
				rows[x.Domain] = &DomainRow{Domain: x.Domain}
			}
			ok, bad := x.Totals()
			rows[x.Domain].TLSReports++
			rows[x.Domain].TLSOK += ok
			rows[x.Domain].TLSFailed += bad
		}
	}
	list := make([]DomainRow, 0, len(rows))
	for _, v := range rows {
		list = append(list, *v)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Domain < list[j].Domain })
	s.render(w, "index.html", map[string]any{"Reader": rd.name, "Admin": rd.admin, "Domains": list})
}

func (s *Server) domain(w http.ResponseWriter, r *http.Request) {
	d := s.domainOf(w, r)
	if d == "" {
		return
	}
	ov, err := s.overview(r.Context(), d)
	if err != nil {
		s.fail(w, "adding up the reports", err)
		return
	}
	ctx := r.Context()
	since := s.now().Add(-Keep)
	tls, err := tlsrpt.Summarize(ctx, s.st, d, since)
	if err != nil {
		s.fail(w, "adding up the TLS reports", err)
		return
	}
	sum, reps := ov.sum, ov.reports
	// ?org= draws one reporting organisation's days (a name the
	// reports do not have draws empty days).
	org := r.URL.Query().Get("org")
	chart := dailyChart(sum.Days, org)
	var published *mailauth.DomainReport
	if s.check != nil {
		// What the domain publishes now, with the DKIM selectors the
		// reports saw (the resolver's cache keeps it cheap).
		p := s.check.CheckDomain(ctx, d, sum.Selectors)
		published = &p
	}
	var tr *Transport
	if s.dns != nil {
		t := transport(ctx, s.dns, d)
		tr = &t
	}
	var suggested []dmarcreport.ZoneRecord
	why := ""
	if published != nil && (published.DMARC.Record == "" || strings.EqualFold(published.DMARC.PolicyDomain, d)) {
		sg := dmarcreport.Suggest(sum, published.DMARC.Record)
		if recs, err := sg.Request.Records(); err == nil {
			suggested, why = recs, sg.Why
		}
	}
	s.render(w, "domain.html", map[string]any{
		"Domain": d, "Summary": sum, "Chart": chart, "Org": org, "Alignment": sum.Alignment,
		"Reports": reps, "TLS": tls, "TLSChart": tlsChart(tls.Days), "Admin": readerOf(r).admin, "Published": published,
		"Suggested": suggested, "SuggestedWhy": why, "Transport": tr,
	})
}

// ptrs is the PTR resolver of the summaries (a nil interface when there
// is no resolver).
func (s *Server) ptrs() dmarcreport.PTRResolver {
	if s.dns == nil {
		return nil
	}
	return s.dns
}

// overview is domain's overview: the one computed before, while no
// report of the domain was stored since (and for overviewKeep at most),
// or a new one.
func (s *Server) overview(ctx context.Context, domain string) (*overview, error) {
	gen, err := dmarcreport.Generation(ctx, s.st, domain)
	if err != nil {
		return nil, err
	}
	now := s.now()
	s.mu.Lock()
	ov := s.recent[domain]
	s.mu.Unlock()
	if ov != nil && ov.gen == gen && now.Sub(ov.at) < overviewKeep {
		return ov, nil
	}
	sum, lines, err := dmarcreport.Overview(ctx, s.st, s.ptrs(), domain, now.Add(-Keep), 200)
	if err != nil {
		return nil, err
	}
	ov = &overview{gen: gen, at: now, sum: sum, reports: lines}
	s.mu.Lock()
	if len(s.recent) >= maxOverviews {
		clear(s.recent)
	}
	s.recent[domain] = ov
	s.mu.Unlock()
	return ov, nil
}

// find is the domain's stored report named id; nil (and 404) for a
// report of another domain, whatever its id.
func (s *Server) find(w http.ResponseWriter, r *http.Request) (string, *dmarcreport.Stored) {
	d := s.domainOf(w, r)
	if d == "" {
		return "", nil
	}
	x, ok, err := dmarcreport.FindIn(r.Context(), s.st, d, r.PathValue("id"))
	if err != nil {
		s.fail(w, "reading the report", err)
		return "", nil
	}
	if !ok {
		http.NotFound(w, r)
		return "", nil
	}
	return d, &x
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	d, x := s.find(w, r)
	if x == nil {
		return
	}
	var recs []dmarcreport.ReceivedRecord
	more := false
	err := x.Records(r.Context(), s.st, func(rec dmarcreport.ReceivedRecord) error {
		if len(recs) == 1000 {
			more = true
			return errEnough
		}
		recs = append(recs, rec)
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		s.fail(w, "reading the report's records", err)
		return
	}
	s.render(w, "report.html", map[string]any{"Domain": d, "Stored": x, "Report": x.Report, "Records": recs, "More": more})
}

var errEnough = errors.New("enough")

// download is the report as wehr stored it, records included, as JSON.
func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	d, x := s.find(w, r)
	if x == nil {
		return
	}
	rep, err := x.Whole(r.Context(), s.st)
	if err != nil {
		s.fail(w, "reading the report's records", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.json"`, d, x.ID))
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(rep)
}

// file is the report file as it was received (its XML), under a name
// of ours: the sender's name for it is not trusted in a header.
func (s *Server) file(w http.ResponseWriter, r *http.Request) {
	d, x := s.find(w, r)
	if x == nil {
		return
	}
	if x.FileChunks == 0 {
		http.Error(w, "wehr did not keep the file of this report (it was stored before wehr kept files); the JSON download has its content", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-%s.xml"`, d, x.ID))
	if r.Method == http.MethodHead {
		return
	}
	if _, err := x.File(r.Context(), s.st, w); err != nil {
		// The status is sent: the client sees a file cut short.
		s.log.Warn("web: report file", "domain", d, "id", x.ID, "error", err)
	}
}

// Serve serves on ln until ctx ends, over TLS when the configuration
// names a certificate.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	err := listener.ServeHTTP(ctx, ln, s.Handler(), listener.HTTP{CertFile: s.cfg.TLSCert, KeyFile: s.cfg.TLSKey,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)})
	if err != nil {
		return fmt.Errorf("web: %w", err)
	}
	return nil
}
