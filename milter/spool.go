package milter

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// spool holds one message: in memory up to a limit, then in a temp file,
// so that a large message costs disk, not memory.
type spool struct {
	max  int
	dir  string
	buf  bytes.Buffer
	file *os.File
	size int64
}

func newSpool(max int, dir string) *spool {
	s := &spool{max: max, dir: dir}
	if b, ok := spoolBuffers.Get().(*bytes.Buffer); ok {
		s.buf = *b
	}
	return s
}

// spoolBuffers keeps the memory of messages spooled before: a message's
// buffer grows as its header fields and body chunks arrive, and most
// messages are about the same size.
var spoolBuffers sync.Pool

// maxPooled bounds the buffers kept for reuse.
const maxPooled = 1 << 20

func (s *spool) Write(p []byte) (int, error) {
	s.size += int64(len(p))
	if s.file == nil && s.buf.Len()+len(p) <= s.max {
		return s.buf.Write(p)
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, "wehr-msg-*")
		if err != nil {
			return 0, fmt.Errorf("spool to disk: %w", err)
		}
		// Unlinked at once: the file goes away with us, whatever happens.
		os.Remove(f.Name())
		if _, err := f.Write(s.buf.Bytes()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool to disk: %w", err)
		}
		s.buf = bytes.Buffer{}
		s.file = f
	}
	return s.file.Write(p)
}

// WriteString is Write without a copy of str while the message is in
// memory.
func (s *spool) WriteString(str string) (int, error) {
	if s.file == nil && s.buf.Len()+len(str) <= s.max {
		s.size += int64(len(str))
		return s.buf.WriteString(str)
	}
	return s.Write([]byte(str))
}

// writeField spools a header field as the milter protocol delivers it:
// the value exactly as it followed the colon, its continuation lines
// LF-separated, which the spool gets as CRLF.
func (s *spool) writeField(name, value string) error {
	if _, err := s.WriteString(name); err != nil {
		return err
	}
	if _, err := s.WriteString(":"); err != nil {
		return err
	}
	for {
		i := strings.IndexByte(value, '\n')
		if i < 0 {
			break
		}
		if _, err := s.WriteString(value[:i]); err != nil {
			return err
		}
		if _, err := s.WriteString("\r\n"); err != nil {
			return err
		}
		value = value[i+1:]
	}
	if _, err := s.WriteString(value); err != nil {
		return err
	}
	_, err := s.WriteString("\r\n")
	return err
}

// Reader returns the whole message from the start.
func (s *spool) Reader() (io.ReadSeeker, error) {
	if s.file == nil {
		return bytes.NewReader(s.buf.Bytes()), nil
	}
	if _, err := s.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return s.file, nil
}

// OnDisk reports whether the message spilled to a file.
func (s *spool) OnDisk() bool { return s.file != nil }

func (s *spool) Close() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	if c := s.buf.Cap(); c > 0 && c <= maxPooled {
		b := s.buf
		b.Reset()
		spoolBuffers.Put(&b)
	}
	s.buf = bytes.Buffer{}
	s.size = 0
}
