// Package reportmail takes the reports other mail systems send us
// (DMARC aggregate reports, RFC 9990; TLS reports, RFC 8460): it finds
// the report file in a message or takes a bare file, decompresses it
// within caps a hostile sender cannot talk past, and runs the inbox a
// Postfix pipe or a Maildir feeds, where a report that cannot be read is
// kept aside with the reason and a store that does not answer means
// "try later". What a report says is its format package's business.
package reportmail

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"strings"
)

// ErrBomb says a compressed report expands beyond what a report can be.
var ErrBomb = errors.New("decompression bomb")

// ErrNotReport says the input holds no report file of the format asked
// for.
var ErrNotReport = errors.New("not a readable report")

// Format is what a report file holds.
type Format int

const (
	XML  Format = iota + 1 // DMARC aggregate reports
	JSON                   // TLS reports
)

func (f Format) String() string {
	switch f {
	case XML:
		return "XML"
	case JSON:
		return "JSON"
	}
	return "unknown"
}

// kinds of report: the other one's name, for the error that says it
// came to the wrong command.
func (f Format) report() string {
	if f == JSON {
		return "a TLS report (JSON: wehr tlsrpt ingest reads it)"
	}
	return "a DMARC aggregate report (XML: wehr dmarc ingest reads it)"
}

// Limits bound what taking a report may cost; the zero value takes the
// defaults.
type Limits struct {
	MaxAttachment int64 // compressed bytes of the attachment (64 MiB)
	MaxSize       int64 // decompressed bytes of the report (1 GiB)
	// MaxRatio is the largest decompressed/compressed ratio taken past
	// the first MiB: reports compress 10-50 times, a bomb a thousand
	// (200).
	MaxRatio   int64
	MaxMembers int // files in a zip (16)
	MaxParts   int // MIME parts of a message (200)
}

func (l Limits) withDefaults() Limits {
	if l.MaxAttachment <= 0 {
		l.MaxAttachment = 64 << 20
	}
	if l.MaxSize <= 0 {
		l.MaxSize = 1 << 30
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = 200
	}
	if l.MaxMembers <= 0 {
		l.MaxMembers = 16
	}
	if l.MaxParts <= 0 {
		l.MaxParts = 200
	}
	return l
}

// Attachment is where a report was found.
type Attachment struct {
	Name        string // the file name the sender gave (never used as a path)
	ContentType string
	Compression string // gzip, zip or none
}

// Open finds the report file of format f in input, which is a report
// email (RFC 9990 "Email", RFC 8460 3: any MIME structure, the report in
// a part of type application/gzip, application/zip, text/xml,
// application/tlsrpt+gzip, application/tlsrpt+json or a look-alike) or a
// bare file (.xml, .json, gzipped or zipped), and returns a reader of
// its decompressed content. The reader enforces the limits as it is
// read: decompressed size, the compression ratio (a bomb is refused
// within its first megabytes), zip members. A file of the other format
// is refused with an error that says which command takes it. Nothing
// from the input reaches the file system.
func Open(input io.Reader, f Format, lim Limits) (io.Reader, Attachment, error) {
	lim = lim.withDefaults()
	br := bufio.NewReaderSize(input, 64<<10)
	head, _ := br.Peek(512)
	if len(bytes.TrimSpace(head)) == 0 {
		return nil, Attachment{}, fmt.Errorf("%w: the input is empty", ErrNotReport)
	}
	if k := sniff(head); k != "" {
		return decompress(br, k, f, Attachment{Name: "(file)", Compression: k}, lim)
	}
	msg, err := mail.ReadMessage(br)
	if err != nil {
		return nil, Attachment{}, fmt.Errorf("%w: neither %s, gzip, zip nor an email: %v", ErrNotReport, f, err)
	}
	parts := 0
	var seen []string
	r, att, err := findPart(textproto.MIMEHeader(msg.Header), msg.Body, f, lim, 0, &parts, &seen)
	if err != nil {
		return nil, att, err
	}
	if r == nil {
		return nil, att, fmt.Errorf("%w: no report attachment in the message (parts: %s)", ErrNotReport, strings.Join(seen, ", "))
	}
	return r, att, nil
}

// sniff names the kind of a bare file from its first bytes.
func sniff(b []byte) string {
	switch {
	case len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b:
		return "gzip"
	case len(b) >= 4 && string(b[:4]) == "PK\x03\x04":
		return "zip"
	}
	if format(b) != 0 {
		return "none"
	}
	return ""
}

// format names the format of a file's first decompressed bytes.
func format(b []byte) Format {
	t := bytes.TrimLeft(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), " \t\r\n")
	switch {
	case len(t) > 0 && t[0] == '<':
		return XML
	case len(t) > 0 && t[0] == '{':
		return JSON
	}
	return 0
}

// findPart walks the MIME tree depth first and returns the first part
// that holds a report.
func findPart(h textproto.MIMEHeader, body io.Reader, f Format, lim Limits, depth int, parts *int, seen *[]string) (io.Reader, Attachment, error) {
	*parts++
	if *parts > lim.MaxParts || depth > 10 {
		return nil, Attachment{}, fmt.Errorf("%w: over %d MIME parts or nested over 10 deep", ErrNotReport, lim.MaxParts)
	}
	ct, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		ct = strings.ToLower(strings.TrimSpace(strings.Split(h.Get("Content-Type"), ";")[0]))
		if ct == "" {
			ct = "text/plain"
		}
	}
	if strings.HasPrefix(ct, "multipart/") {
		if params["boundary"] == "" {
			return nil, Attachment{}, fmt.Errorf("%w: a %s part without a boundary", ErrNotReport, ct)
		}
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return nil, Attachment{}, nil
			}
			if err != nil {
				return nil, Attachment{}, fmt.Errorf("%w: MIME: %v", ErrNotReport, err)
			}
			r, att, err := findPart(p.Header, p, f, lim, depth+1, parts, seen)
			if err != nil || r != nil {
				return r, att, err
			}
		}
	}
	name := params["name"]
	if _, dp, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil && dp["filename"] != "" {
		name = dp["filename"]
	}
	*seen = append(*seen, ct)
	lname := strings.ToLower(name)
	kind := ""
	switch {
	case ct == "application/gzip" || ct == "application/x-gzip" || ct == "application/gzip-compressed" ||
		ct == "application/tlsrpt+gzip" || strings.HasSuffix(lname, ".gz") || strings.HasSuffix(lname, ".gzip"):
		kind = "gzip"
	case ct == "application/zip" || ct == "application/x-zip-compressed" || ct == "application/x-zip" || strings.HasSuffix(lname, ".zip"):
		kind = "zip"
	case f == XML && (ct == "text/xml" || ct == "application/xml" || strings.HasSuffix(lname, ".xml")),
		f == JSON && (ct == "application/tlsrpt+json" || ct == "application/json" || strings.HasSuffix(lname, ".json")):
		kind = "none"
	case ct == "application/octet-stream":
		kind = "sniff"
	default:
		return nil, Attachment{}, nil
	}
	var dec io.Reader = body
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		dec = base64.NewDecoder(base64.StdEncoding, &base64Clean{r: body})
	case "quoted-printable":
		dec = quotedprintable.NewReader(body)
	}
	att := Attachment{Name: name, ContentType: ct}
	// The content decides, whatever the label: reporters mislabel.
	br := bufio.NewReaderSize(dec, 64<<10)
	head, _ := br.Peek(512)
	if k := sniff(head); k != "" {
		kind = k
	} else if kind == "sniff" {
		return nil, Attachment{}, nil
	}
	att.Compression = kind
	return decompress(br, kind, f, att, lim)
}

// decompress returns the content of a report file of the given kind,
// once its first bytes show it holds format f.
func decompress(r io.Reader, kind string, f Format, att Attachment, lim Limits) (io.Reader, Attachment, error) {
	x, att, err := decompressed(r, kind, f, att, lim)
	if err != nil {
		return nil, att, err
	}
	br := bufio.NewReader(x)
	head, err := br.Peek(64)
	if len(head) == 0 && err != nil {
		if errors.Is(err, ErrBomb) {
			return nil, att, err
		}
		return nil, att, fmt.Errorf("%w: the %s file is empty or cut short: %v", ErrNotReport, f, err)
	}
	switch got := format(head); {
	case got == f:
		return br, att, nil
	case got != 0:
		return nil, att, fmt.Errorf("%w: the file %q is %s", ErrNotReport, att.Name, got.report())
	}
	return nil, att, fmt.Errorf("%w: the file %q is not %s", ErrNotReport, att.Name, f)
}

func decompressed(r io.Reader, kind string, f Format, att Attachment, lim Limits) (io.Reader, Attachment, error) {
	in := &countReader{r: r}
	switch kind {
	case "gzip":
		zr, err := gzip.NewReader(io.LimitReader(in, lim.MaxAttachment+1))
		if err != nil {
			return nil, att, fmt.Errorf("%w: gzip: %v", ErrNotReport, err)
		}
		return &bombGuard{r: zr, in: in, lim: lim, what: "gzip"}, att, nil
	case "zip":
		b, err := io.ReadAll(io.LimitReader(in, lim.MaxAttachment+1))
		if err != nil {
			return nil, att, fmt.Errorf("zip: %w", err)
		}
		if int64(len(b)) > lim.MaxAttachment {
			return nil, att, fmt.Errorf("%w: the zip file is over %d bytes", ErrNotReport, lim.MaxAttachment)
		}
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, att, fmt.Errorf("%w: zip: %v", ErrNotReport, err)
		}
		if len(zr.File) > lim.MaxMembers {
			return nil, att, fmt.Errorf("%w: the zip holds %d files (at most %d)", ErrNotReport, len(zr.File), lim.MaxMembers)
		}
		ext := "." + strings.ToLower(f.String())
		for _, f := range zr.File {
			if f.FileInfo().IsDir() || !strings.HasSuffix(strings.ToLower(f.Name), ext) && len(zr.File) > 1 {
				continue
			}
			// Decompress the raw member ourselves, counting its
			// compressed bytes as they are read: the ratio guard then
			// works as for gzip, whatever sizes the zip headers claim.
			raw, err := f.OpenRaw()
			if err != nil {
				return nil, att, fmt.Errorf("%w: zip member %q: %v", ErrNotReport, f.Name, err)
			}
			att.Name += "/" + f.Name
			cin := &countReader{r: raw}
			var rc io.Reader
			switch f.Method {
			case zip.Deflate:
				rc = flate.NewReader(cin)
			case zip.Store:
				rc = cin
			default:
				return nil, att, fmt.Errorf("%w: zip member %q uses compression method %d", ErrNotReport, f.Name, f.Method)
			}
			return &bombGuard{r: rc, in: cin, lim: lim, what: "zip member"}, att, nil
		}
		return nil, att, fmt.Errorf("%w: no %s file in the zip", ErrNotReport, ext)
	default:
		return &bombGuard{r: in, in: nil, lim: lim, what: f.String()}, att, nil
	}
}

// countReader counts what was read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// bombGuard stops a decompressed stream that is too large, or grows
// too much faster than its compressed input.
type bombGuard struct {
	r    io.Reader
	in   *countReader // compressed bytes read; nil for plain XML
	lim  Limits
	n    int64
	what string
}

func (b *bombGuard) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.lim.MaxSize {
		return n, fmt.Errorf("%w: the %s expands to over %d bytes", ErrBomb, b.what, b.lim.MaxSize)
	}
	if b.in != nil && b.n > 1<<20 && b.n > b.lim.MaxRatio*max(b.in.n, 1) {
		return n, fmt.Errorf("%w: the %s expands over %d times (%d bytes from %d)", ErrBomb, b.what, b.lim.MaxRatio, b.n, b.in.n)
	}
	return n, err
}

// base64Clean drops what is not base64 (line ends, spaces, junk some
// reporters leave) before decoding.
type base64Clean struct{ r io.Reader }

func (c *base64Clean) Read(p []byte) (int, error) {
	for {
		n, err := c.r.Read(p)
		j := 0
		for _, ch := range p[:n] {
			if ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '+' || ch == '/' || ch == '=' {
				p[j] = ch
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}
