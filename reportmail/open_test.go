package reportmail

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"testing"
)

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zipped(files ...string) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for i := 0; i+1 < len(files); i += 2 {
		f, _ := w.Create(files[i])
		f.Write([]byte(files[i+1]))
	}
	w.Close()
	return buf.Bytes()
}

func email(ct, name string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: r@reporter.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n")
	b.WriteString("--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\nContent-Type: " + ct + "\r\n")
	if name != "" {
		b.WriteString("Content-Disposition: attachment; filename=\"" + name + "\"\r\n")
	}
	b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(body) + "\r\n--XX--\r\n")
	return b.Bytes()
}

const (
	xmlReport  = `<?xml version="1.0"?><feedback><report_metadata/></feedback>`
	jsonReport = `{"organization-name":"X","policies":[]}`
)

// Each way a reporter sends a report opens to the report's content; the
// other format, or none, is a clear error that names the right command.
func TestOpen(t *testing.T) {
	tests := []struct {
		name        string
		f           Format
		in          []byte
		want        string // the content, or an error's words
		compression string
	}{
		{"bare XML", XML, []byte(xmlReport), xmlReport, "none"},
		{"bare JSON", JSON, []byte(jsonReport), jsonReport, "none"},
		{"bare JSON with a BOM", JSON, []byte("\xef\xbb\xbf" + jsonReport), "\xef\xbb\xbf" + jsonReport, "none"},
		{"json.gz", JSON, gz([]byte(jsonReport)), jsonReport, "gzip"},
		{"zip with a .json member", JSON, zipped("readme.txt", "x", "r.json", jsonReport), jsonReport, "zip"},
		{"zip with an .xml member", XML, zipped("r.xml", xmlReport, "r.json", jsonReport), xmlReport, "zip"},
		{"application/tlsrpt+gzip", JSON, email("application/tlsrpt+gzip", "", gz([]byte(jsonReport))), jsonReport, "gzip"},
		{"application/tlsrpt+json", JSON, email("application/tlsrpt+json", "", []byte(jsonReport)), jsonReport, "none"},
		{"octet-stream named .json.gz", JSON, email("application/octet-stream", "r.json.gz", gz([]byte(jsonReport))), jsonReport, "gzip"},
		{"application/gzip DMARC", XML, email("application/gzip", "r.xml.gz", gz([]byte(xmlReport))), xmlReport, "gzip"},
		{"JSON asked, XML sent", JSON, []byte(xmlReport), "DMARC aggregate report (XML: wehr dmarc ingest", ""},
		{"XML asked, JSON sent", XML, gz([]byte(jsonReport)), "TLS report (JSON: wehr tlsrpt ingest", ""},
		{"XML asked, TLS report by mail", XML, email("application/tlsrpt+gzip", "", gz([]byte(jsonReport))), "wehr tlsrpt ingest", ""},
		{"JSON asked, only an XML attachment", JSON, email("text/xml", "r.xml", []byte(xmlReport)), "no report attachment", ""},
		{"gzip of text", JSON, gz([]byte("hello")), "is not JSON", ""},
		{"empty gzip", JSON, gz(nil), "empty", ""},
		{"empty", JSON, nil, "empty", ""},
	}
	for _, tc := range tests {
		r, att, err := Open(bytes.NewReader(tc.in), tc.f, Limits{})
		if tc.compression == "" {
			if err == nil || !errors.Is(err, ErrNotReport) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		b, err := io.ReadAll(r)
		if err != nil || string(b) != tc.want || att.Compression != tc.compression {
			t.Errorf("%s: %q (%s) %v, want %q (%s)", tc.name, b, att.Compression, err, tc.want, tc.compression)
		}
	}
}

// A bomb is refused whatever the format, within its first megabytes.
func TestOpenBomb(t *testing.T) {
	for _, f := range []Format{XML, JSON} {
		head := "<feedback>"
		if f == JSON {
			head = `{"x":"`
		}
		in := gz(append([]byte(head), make([]byte, 64<<20)...))
		r, _, err := Open(bytes.NewReader(in), f, Limits{})
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if !errors.Is(err, ErrBomb) {
			t.Errorf("%s: %v, want a refused bomb", f, err)
		}
	}
}

// Any input, for either format, gives a reader or an error, never a
// panic, and the reader stops within the limits.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(jsonReport), true)
	f.Add(gz([]byte(jsonReport)), true)
	f.Add(email("application/tlsrpt+gzip", "", gz([]byte(jsonReport))), true)
	f.Add(zipped("r.json", jsonReport), true)
	f.Add(email("application/gzip", "r.xml.gz", gz([]byte(xmlReport))), false)
	f.Fuzz(func(t *testing.T, b []byte, json bool) {
		lim := Limits{MaxSize: 1 << 20, MaxAttachment: 1 << 20}
		format := XML
		if json {
			format = JSON
		}
		x, _, err := Open(bytes.NewReader(b), format, lim)
		if err != nil {
			return
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(x, 2<<20))
		if n > 1<<20+64<<10 {
			t.Fatalf("read %d bytes past the %d limit", n, lim.MaxSize)
		}
	})
}
