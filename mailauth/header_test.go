package mailauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestReadHeader(t *testing.T) {
	msg := "From: a@example.org\r\nSubject: folded\r\n\tcontinued\r\n  again\r\nbogus line\r\nX-Empty:\r\nFrom : b@example.net\r\n\r\nbody\r\nFrom: not@header.example\r\n"
	h, err := ReadHeader(bufio.NewReader(strings.NewReader(msg)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Fields) != 4 || h.Malformed != 1 {
		t.Fatalf("fields %+v, malformed %d", h.Fields, h.Malformed)
	}
	if v := h.Get("subject"); v != "folded\tcontinued  again" {
		t.Errorf("unfolded subject %q", v)
	}
	if h.Fields[1].Raw != " folded\r\n\tcontinued\r\n  again" {
		t.Errorf("raw value %q", h.Fields[1].Raw)
	}
	if got := h.Values("From"); len(got) != 2 {
		t.Errorf("From values %q", got)
	}
	if h.Size != strings.Index(msg, "body") {
		t.Errorf("size %d, want %d", h.Size, strings.Index(msg, "body"))
	}
	// LF endings, and a message that is all header.
	h, err = ReadHeader(bufio.NewReader(strings.NewReader("A: 1\nB: 2\n c")), 0)
	if err != nil || len(h.Fields) != 2 || h.Get("b") != "2 c" {
		t.Fatalf("LF, no body: %+v %v", h, err)
	}
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader("A: "+strings.Repeat("x", 100)+"\n\n")), 50); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("cap: %v", err)
	}
}

func TestAuthorDomainsParsing(t *testing.T) {
	tests := []struct {
		from []string
		want string
		bad  bool
	}{
		{[]string{"alice@Example.ORG"}, "example.org", false},
		{[]string{`"Alice, Bank" <alice@bank.example>`}, "bank.example", false},
		{[]string{"=?utf-8?q?Al=C3=AFce?= <alice@bank.example>"}, "bank.example", false},
		{[]string{"a@x.org, b@x.org"}, "x.org", false},
		{[]string{"a@x.org, b@y.org"}, "x.org y.org", false},
		{[]string{"team: a@x.org, b@y.org;"}, "x.org y.org", false},
		{[]string{"a@x.org", "b@y.org"}, "x.org y.org", false},
		{[]string{"a@bücher.example"}, "xn--bcher-kva.example", false},
		{[]string{"a@xn--bcher-kva.example"}, "xn--bcher-kva.example", false},
		{[]string{"<a@x.org> (comment)"}, "x.org", false},
		{[]string{`"broken", <noreply@example.com>`}, "example.com", false},
		{nil, "", true},
		{[]string{"undisclosed-recipients:;"}, "", true},
		{[]string{"no address here"}, "", true},
		{[]string{"a@"}, "", true},
	}
	for _, tc := range tests {
		var b strings.Builder
		for _, f := range tc.from {
			b.WriteString("From: " + f + "\r\n")
		}
		b.WriteString("\r\n")
		h, _ := ReadHeader(bufio.NewReader(strings.NewReader(b.String())), 0)
		got, why := AuthorDomains(h)
		if tc.bad {
			if len(got) > 0 || why == "" {
				t.Errorf("%q: got %v, want none with a reason", tc.from, got)
			}
			continue
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: got %v (%s), want %s", tc.from, got, why, tc.want)
		}
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("From: a@example.org\r\nList-Id: <l.lists.example.net>\r\nDKIM-Signature: v=1; d=example.org; s=s; b=abc\r\n\r\nbody"))
	f.Add([]byte("From: \"x\r\n y\", <a@b.c>\n\n"))
	f.Add([]byte(" lead\nA:\n\tb\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bufio.NewReader(bytes.NewReader(data)), 1<<16)
		// The same as the reference, a line at a time with a builder.
		if ref, rerr := refReadHeader(bufio.NewReader(bytes.NewReader(data)), 1<<16); (err == nil) != (rerr == nil) ||
			err == nil && (!reflect.DeepEqual(ref.Fields, h.Fields) && len(ref.Fields)+len(h.Fields) > 0 || ref.Size != h.Size || ref.Malformed != h.Malformed) {
			t.Fatalf("%+v %v\nreference %+v %v", h, err, ref, rerr)
		}
		if err != nil {
			if !errors.Is(err, ErrHeaderTooLarge) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if h.Size > len(data) {
			t.Fatalf("size %d > input %d", h.Size, len(data))
		}
		for _, fl := range h.Fields {
			if !ValidFieldName(fl.Name) {
				t.Fatalf("invalid field name %q", fl.Name)
			}
		}
		domains, why := AuthorDomains(h)
		if len(domains) == 0 && why == "" {
			t.Fatal("no author domain and no reason")
		}
		for _, d := range domains {
			if d == "" || d != strings.ToLower(d) {
				t.Fatalf("author domain %q", d)
			}
		}
		listDomains(h)
		for _, fl := range h.Fields {
			parseSigTags(fl.Value())
		}
	})
}

// refReadHeader is ReadHeader as it was written before it gathered the
// section into one string: the reference FuzzReadHeader compares with.
func refReadHeader(r *bufio.Reader, max int) (Header, error) {
	var h Header
	// The field being read; its continuation lines are appended to a
	// builder, so that a long folded field costs linear time.
	var cur strings.Builder
	have := false
	flush := func() {
		if have {
			h.Fields[len(h.Fields)-1].Raw = cur.String()
			cur.Reset()
			have = false
		}
	}
	for {
		line, err := r.ReadString('\n')
		h.Size += len(line)
		if max > 0 && h.Size > max {
			flush()
			return h, fmt.Errorf("%w: more than %d bytes", ErrHeaderTooLarge, max)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			flush()
			return h, fmt.Errorf("read header: %w", err)
		}
		body := strings.TrimRight(line, "\r\n")
		if body == "" {
			flush()
			return h, nil // end of header (or of input)
		}
		switch {
		case body[0] == ' ' || body[0] == '\t':
			if !have {
				h.Malformed++
			} else {
				cur.WriteString("\r\n")
				cur.WriteString(body)
			}
		default:
			flush()
			name, raw, ok := strings.Cut(body, ":")
			// RFC 5322 2.2: field names are printable ASCII except
			// colon; "From :" (space before the colon) is obsolete
			// syntax (RFC 5322 4.5.8) that mailers still accept.
			trimmed := strings.TrimRight(name, " \t")
			if !ok || !ValidFieldName(trimmed) {
				h.Malformed++
			} else {
				h.Fields = append(h.Fields, Field{Name: trimmed, Sep: name[len(trimmed):]})
				cur.WriteString(raw)
				have = true
			}
		}
		if errors.Is(err, io.EOF) {
			flush()
			return h, nil
		}
	}
}
