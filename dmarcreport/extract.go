package dmarcreport

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

// Attachment is where a report was found.
type Attachment struct {
	Name        string // the file name the sender gave (never used as a path)
	ContentType string
	Compression string // gzip, zip or none
}

// Open finds the report in input, which is a report email (RFC 9990
// "Email": any MIME structure, the report in a part of type
// application/gzip, application/zip, text/xml or a look-alike) or a
// bare .xml, .xml.gz or .zip file, and returns a reader of its XML. The
// reader enforces the limits as it is read: decompressed size, the
// compression ratio (a bomb is refused within its first megabytes),
// zip members. Nothing from the input reaches the file system.
func Open(input io.Reader, lim Limits) (io.Reader, Attachment, error) {
	lim = lim.withDefaults()
	br := bufio.NewReaderSize(input, 64<<10)
	head, _ := br.Peek(512)
	if len(bytes.TrimSpace(head)) == 0 {
		return nil, Attachment{}, fmt.Errorf("%w: the input is empty", ErrNotReport)
	}
	if k := sniff(head); k != "" {
		return decompress(br, k, Attachment{Name: "(file)", Compression: k}, lim)
	}
	msg, err := mail.ReadMessage(br)
	if err != nil {
		return nil, Attachment{}, fmt.Errorf("%w: neither XML, gzip, zip nor an email: %v", ErrNotReport, err)
	}
	parts := 0
	var seen []string
	r, att, err := findPart(textproto.MIMEHeader(msg.Header), msg.Body, lim, 0, &parts, &seen)
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
	t := bytes.TrimLeft(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")), " \t\r\n")
	if len(t) > 0 && t[0] == '<' {
		return "none"
	}
	return ""
}

// findPart walks the MIME tree depth first and returns the first part
// that holds a report.
func findPart(h textproto.MIMEHeader, body io.Reader, lim Limits, depth int, parts *int, seen *[]string) (io.Reader, Attachment, error) {
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
			r, att, err := findPart(p.Header, p, lim, depth+1, parts, seen)
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
		strings.HasSuffix(lname, ".gz") || strings.HasSuffix(lname, ".gzip"):
		kind = "gzip"
	case ct == "application/zip" || ct == "application/x-zip-compressed" || ct == "application/x-zip" || strings.HasSuffix(lname, ".zip"):
		kind = "zip"
	case ct == "text/xml" || ct == "application/xml" || strings.HasSuffix(lname, ".xml"):
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
	return decompress(br, kind, att, lim)
}

// decompress returns the XML of a report file of the given kind.
func decompress(r io.Reader, kind string, att Attachment, lim Limits) (io.Reader, Attachment, error) {
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
			return nil, att, fmt.Errorf("dmarcreport: zip: %w", err)
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
		for _, f := range zr.File {
			if f.FileInfo().IsDir() || !strings.HasSuffix(strings.ToLower(f.Name), ".xml") && len(zr.File) > 1 {
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
		return nil, att, fmt.Errorf("%w: no .xml file in the zip", ErrNotReport)
	default:
		return &bombGuard{r: in, in: nil, lim: lim, what: "XML"}, att, nil
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
	if b.n > b.lim.MaxXML {
		return n, fmt.Errorf("%w: the %s expands to over %d bytes", ErrBomb, b.what, b.lim.MaxXML)
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
