package milter

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// packet frames one milter command.
func packet(cmd byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, cmd), data...)
}

// FuzzServer writes arbitrary byte streams to a running milter server:
// whatever arrives, the server must neither crash nor hang, and must
// close the connection. (milterproto's FuzzSession fuzzes the protocol
// alone, and fails on a recovered panic too.)
func FuzzServer(f *testing.F) {
	addr, _ := startServer(f, nil, nil)
	var session []byte
	for _, p := range [][]byte{
		packet('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"),
		packet('D', "Cj\x00mx.test\x00"),
		packet('C', "mail.example.org\x004\x9c\x40192.0.2.1\x00"),
		packet('H', "mail.example.org\x00"),
		packet('D', "M{auth_authen}\x00\x00i\x00ABC123\x00"),
		packet('M', "<alice@example.org>\x00"),
		packet('R', "<user@mx.test>\x00"),
		packet('T', ""),
		packet('L', "From\x00 alice@example.org\x00"),
		packet('L', "Authentication-Results\x00 mx.test; spf=pass\x00"),
		packet('N', ""),
		packet('B', "hello\r\n"),
		packet('E', ""),
		packet('A', ""),
		packet('Q', ""),
	} {
		session = append(session, p...)
		f.Add(append([]byte(nil), session...))
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add(packet('O', "\x01"))
	f.Add(packet('C', "h\x006"))
	f.Add(packet('L', "From"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(data)                                       //nolint:errcheck
		c.(*net.TCPConn).CloseWrite()                       //nolint:errcheck
		c.SetReadDeadline(time.Now().Add(15 * time.Second)) //nolint:errcheck
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("server kept the connection open for 15 s after the client's EOF")
				}
				return
			}
		}
	})
}
