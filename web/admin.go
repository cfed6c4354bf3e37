package web

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wehr/wehr/store"
)

// Failure is a report that could not be read, as the failed folder
// keeps it (reportmail.Inbox): the file, when, where from, and why.
type Failure struct {
	File, When, Source, Reason string
}

// maxFailures is how many of the failed folder's reports the page lists
// (the newest).
const maxFailures = 100

// failures reads the failed folder's .reason files, the newest first.
func failures(dir string) ([]Failure, int, error) {
	if dir == "" {
		return nil, 0, nil
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.reason"))
	if err != nil {
		return nil, 0, err
	}
	// The names start with the UTC time they were kept at.
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	total := len(names)
	var out []Failure
	for _, n := range names[:min(len(names), maxFailures)] {
		f := Failure{File: strings.TrimSuffix(filepath.Base(n), ".reason")}
		if fh, err := os.Open(n); err == nil {
			sc := bufio.NewScanner(fh)
			sc.Buffer(make([]byte, 4096), 64<<10)
			for i := 0; i < 3 && sc.Scan(); i++ {
				switch i {
				case 0:
					f.When = sc.Text()
				case 1:
					f.Source = clip(sc.Text())
				case 2:
					f.Reason = clip(sc.Text())
				}
			}
			fh.Close()
		}
		out = append(out, f)
	}
	return out, total, nil
}

// admin is the admin's page: the reports that could not be read, and
// how sending our own reports goes. Another token gets 404.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	if !readerOf(r).admin {
		http.NotFound(w, r)
		return
	}
	fails, total, err := failures(s.FailedDir)
	if err != nil {
		s.fail(w, "reading the failed folder", err)
		return
	}
	marks, err := store.NewReportMarks(s.st).List(r.Context(), "")
	if err != nil {
		s.fail(w, "reading what was sent", err)
		return
	}
	counts := map[string]int{}
	var problems []store.ReportMark
	var lastSent store.ReportMark
	for _, m := range marks {
		counts[m.Status]++
		if m.Status == "sent" {
			if m.At.After(lastSent.At) {
				lastSent = m
			}
			continue
		}
		problems = append(problems, m)
	}
	sort.Slice(problems, func(i, j int) bool { return problems[i].At.After(problems[j].At) })
	problems = problems[:min(len(problems), 100)]
	supp, err := store.NewSuppressions(s.st).List(r.Context())
	if err != nil {
		s.fail(w, "reading the suppression list", err)
		return
	}
	s.render(w, "admin.html", map[string]any{
		"Failures": fails, "FailuresTotal": total, "FailedDir": s.FailedDir,
		"Counts": counts, "LastSent": lastSent, "Problems": problems, "Suppressed": supp,
	})
}
