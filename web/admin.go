package web

import (
	"net/http"
	"sort"

	"github.com/wehr/wehr/reportmail"
	"github.com/wehr/wehr/store"
)

// maxFailures is how many of the failed folder's reports the page lists
// (the newest).
const maxFailures = 100

// admin is the admin's page: the reports that could not be read, and
// how sending our own reports goes. Another token gets 404.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) {
	if !readerOf(r).admin {
		http.NotFound(w, r)
		return
	}
	fails, total, err := reportmail.Failures(s.FailedDir, maxFailures)
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
