package policyd

import (
	"bufio"
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

// ReadRequest reads one request: name=value lines up to an empty line.
// io.EOF means the client closed the connection between requests.
func ReadRequest(br *bufio.Reader) (Request, error) {
	req := Request{}
	size := 0
	for {
		line, err := readLine(br)
		if err != nil {
			if errors.Is(err, io.EOF) && len(req) == 0 && size == 0 {
				return nil, io.EOF
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%w: connection closed inside a request", ErrProtocol)
			}
			return nil, err
		}
		size += len(line) + 1
		if size > maxRequest {
			return nil, fmt.Errorf("%w: request longer than %d bytes", ErrProtocol, maxRequest)
		}
		if line == "" {
			if len(req) == 0 {
				return nil, fmt.Errorf("%w: empty request", ErrProtocol)
			}
			return req, nil
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("%w: line %q is not name=value", ErrProtocol, truncate(line, 60))
		}
		if len(req) >= maxAttributes {
			return nil, fmt.Errorf("%w: more than %d attributes", ErrProtocol, maxAttributes)
		}
		req[name] = value
	}
}

// readLine reads a line without its LF (and CR), refusing overlong ones.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, isPrefix, err := br.ReadLine()
		if err != nil {
			return "", err
		}
		b = append(b, frag...)
		if len(b) > maxLine {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, maxLine)
		}
		if !isPrefix {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
	}
}

// WriteAction writes the answer to one request.
func WriteAction(w io.Writer, action string) error {
	_, err := fmt.Fprintf(w, "action=%s\n\n", strings.NewReplacer("\n", " ", "\r", " ").Replace(action))
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
