package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Request is one policy delegation request: Postfix's name=value
// attributes (https://www.postfix.org/SMTPD_POLICY_README.html).
type Request map[string]string

// Get returns an attribute, "" if absent.
func (r Request) Get(name string) string { return r[name] }

// Limits on what a client may send; Postfix's requests are a few hundred
// bytes.
const (
	maxLine       = 8 << 10
	maxRequest    = 64 << 10
	maxAttributes = 128
)

// ErrProtocol is wrapped by errors about malformed input.
var ErrProtocol = errors.New("policy protocol error")

// EndsRequest says whether data read from Postfix ends with a request's
// end (its empty line): Postfix then waits for the answer
// (listener.AckUnless).
func EndsRequest(read []byte) bool { return bytes.HasSuffix(read, []byte("\n\n")) }

// ReadRequest reads one request: name=value lines up to an empty line.
// io.EOF means the client closed the connection between requests. The
// request's text becomes one string that names and values share (one
// allocation, not one per line).
func ReadRequest(br *bufio.Reader) (Request, error) {
	buf := make([]byte, 0, 1024) // Postfix's requests are about 600 bytes
	lines := 0
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) && lines == 0 && len(buf) == 0 {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: connection closed inside a request", ErrProtocol)
			}
			return nil, err
		}
		if len(buf)+len(line)+1 > maxRequest {
			return nil, fmt.Errorf("%w: request longer than %d bytes", ErrProtocol, maxRequest)
		}
		if len(line) == 0 {
			break
		}
		if lines++; lines > maxAttributes {
			return nil, fmt.Errorf("%w: more than %d attributes", ErrProtocol, maxAttributes)
		}
		if eq := bytes.IndexByte(line, '='); eq <= 0 {
			return nil, fmt.Errorf("%w: line %q is not name=value", ErrProtocol, truncate(string(line), 60))
		}
		buf = append(append(buf, line...), '\n')
	}
	if lines == 0 {
		return nil, fmt.Errorf("%w: empty request", ErrProtocol)
	}
	text := string(buf)
	req := make(Request, lines)
	for line := range strings.SplitSeq(strings.TrimSuffix(text, "\n"), "\n") {
		name, value, _ := strings.Cut(line, "=")
		req[name] = value
	}
	return req, nil
}

// readLine reads a line without its LF (and CR), refusing overlong ones.
// The slice is valid until the next read from br.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case err == nil:
		line = line[:len(line)-1]
	case errors.Is(err, bufio.ErrBufferFull):
		if line, err = readLong(br, line); err != nil {
			return nil, err
		}
	case len(line) > 0 && errors.Is(err, io.EOF):
		return nil, io.ErrUnexpectedEOF
	default:
		return nil, err
	}
	if len(line) > maxLine {
		return nil, fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, maxLine)
	}
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readLong reads the rest of a line longer than the reader's buffer.
func readLong(br *bufio.Reader, start []byte) ([]byte, error) {
	b := append([]byte(nil), start...)
	for {
		frag, err := br.ReadSlice('\n')
		if len(b)+len(frag) > maxLine+2 {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, maxLine)
		}
		b = append(b, frag...)
		switch {
		case err == nil:
			return b[:len(b)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// WriteAction writes the answer to one request, in one write.
func WriteAction(w io.Writer, action string) error {
	b := make([]byte, 0, len("action=\n\n")+len(action))
	b = append(b, "action="...)
	for i := 0; i < len(action); i++ {
		c := action[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	b = append(b, "\n\n"...)
	_, err := w.Write(b)
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
