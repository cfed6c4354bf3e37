package mailauth

import (
	"bufio"
	"bytes"
	"errors"
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
