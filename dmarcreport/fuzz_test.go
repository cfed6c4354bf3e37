package dmarcreport

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func seeds(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(stalwart, "*.xml"))
	emls, _ := filepath.Glob(filepath.Join(stalwart, "*.eml"))
	for _, p := range append(files, emls...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	plain := []byte(wild("UTF-8", Namespace, "R"))
	f.Add(plain)
	f.Add(gz(plain))
	f.Add(zipped("r.xml", plain))
	f.Add(email("application/gzip", "r.xml.gz", "base64", gz(plain)))
}

// The report parser: any input gives a report or an error, never a
// panic, and a report it gives has what a stored report needs.
func FuzzDecode(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		n := 0
		rep, err := Decode(bytes.NewReader(b), Limits{MaxXML: 1 << 20}, func(ReceivedRecord) error { n++; return nil })
		if err != nil {
			return
		}
		if rep.Policy.Domain == "" || rep.ReportID == "" || rep.OrgName == "" || rep.RecordCount != n {
			t.Fatalf("report without its key fields: %+v (%d records handed)", rep, n)
		}
	})
}

// The MIME and attachment extraction: any input, an email or a file,
// gives a reader or an error, and the reader stops within the limits.
func FuzzOpen(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{MaxXML: 1 << 20, MaxAttachment: 1 << 20}
		x, att, err := Open(bytes.NewReader(b), lim)
		if err != nil {
			return
		}
		if strings.ContainsAny(att.Compression, "/\\") {
			t.Fatalf("compression %q", att.Compression)
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(x, 2<<20))
		if n > 1<<20+64<<10 {
			t.Fatalf("read %d bytes past the %d limit", n, lim.MaxXML)
		}
	})
}
