package dmarcreport

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"mime"
	"strings"
	"time"
)

// Email is a report as a message to one destination.
type Email struct {
	Filename string
	ReportID string
	Raw      []byte // the RFC 5322 message, CRLF line ends, unsigned
}

// Compose writes the message that carries report f (gzipped as gz) to
// the address to, per RFC 9990 "Email": the subject names the policy
// domain, the submitter and the report id; the report is an
// application/gzip attachment named by Filename; the Message-ID is the
// report id, so that a report sent again after a crash is recognisably
// the same one.
func Compose(meta Meta, f *Feedback, gz []byte, to string, now time.Time) Email {
	domain := f.Policy.Domain
	begin := time.Unix(f.Metadata.DateRange.Begin, 0).UTC()
	end := time.Unix(f.Metadata.DateRange.End+1, 0).UTC()
	name := Filename(meta.Submitter, domain, begin, end)
	id := f.Metadata.ReportID
	sum := sha256.Sum256([]byte(id))
	boundary := "wehr-" + hex.EncodeToString(sum[:12])

	var b bytes.Buffer
	h := func(name, value string) { fmt.Fprintf(&b, "%s: %s\r\n", name, value) }
	h("From", headerAddress(meta.OrgName, meta.Email))
	h("To", "<"+to+">")
	// RFC 9990: Report Domain: D Submitter: S Report-ID: <id>, folded.
	h("Subject", "Report Domain: "+domain+"\r\n Submitter: "+meta.Submitter+"\r\n Report-ID: <"+id+">")
	h("Date", now.UTC().Format(time.RFC1123Z))
	h("Message-ID", "<"+id+">")
	h("Auto-Submitted", "auto-generated") // RFC 3834: no auto-replies
	h("MIME-Version", "1.0")
	h("Content-Type", `multipart/mixed; boundary="`+boundary+`"`)
	b.WriteString("\r\n")
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is a DMARC aggregate report (RFC 9990) for %s\r\nfrom %s, for %s to %s (UTC), %d record(s).\r\n",
		domain, meta.Submitter, begin.Format("2006-01-02 15:04"), end.Format("2006-01-02 15:04"), len(f.Records))
	if meta.ExtraContactInfo != "" {
		fmt.Fprintf(&b, "Questions about this report: %s\r\n", meta.ExtraContactInfo)
	}
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: application/gzip; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
		boundary, name, name)
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return Email{Filename: name, ReportID: id, Raw: b.Bytes()}
}

// headerAddress is "Name" <addr>: the name quoted, stripped of control
// characters and quotes, RFC 2047-encoded when it is not ASCII.
func headerAddress(name, addr string) string {
	ascii := true
	name = strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r == 0x7f {
			return -1
		}
		if r > '~' {
			ascii = false
		}
		return r
	}, name)
	switch {
	case name == "":
		return "<" + addr + ">"
	case !ascii:
		return mime.QEncoding.Encode("utf-8", name) + " <" + addr + ">"
	}
	return `"` + name + `" <` + addr + ">"
}
