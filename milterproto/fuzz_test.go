package milterproto

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzSession writes arbitrary bytes after a good negotiation: whatever
// comes, the session must not panic (serve would recover and log it:
// the log is checked), must not hand the handler a header without a
// name, and must close the connection after the MTA's end of file.
func FuzzSession(f *testing.F) {
	addr, events, logs, _ := serve(f, ours, func(ss *Session) Reply {
		ss.InsertHeader(0, "Authentication-Results", " mx.test; none") //nolint:errcheck
		ss.ChangeHeader(1, "X-Old", "")                                //nolint:errcheck
		ss.Quarantine("q")                                             //nolint:errcheck
		return Accept
	})
	for _, seed := range [][]byte{
		bytes.Join([][]byte{pkt('D', "Cj\x00mx.test\x00"), pkt('C', "h\x004\x00\x19192.0.2.1\x00"), pkt('H', "h\x00"),
			pkt('D', "M{auth_authen}\x00\x00i\x00Q\x00"), pkt('M', "<a@b>\x00SIZE=1\x00"), pkt('R', "<c@d>\x00"), pkt('T', ""),
			pkt('L', "From\x00 a@b\x00"), pkt('N', ""), pkt('B', "x\r\n"), pkt('D', "Ei\x00Q\x00"), pkt('E', ""), pkt('A', ""),
			pkt('K', ""), pkt('Q', "")}, nil),
		pkt('C', "h\x006\x00\x19IPv6:[::1]\x00"),
		pkt('C', "h\x00U"),
		pkt('L', "\x00\x00"),
		pkt('E', "last chunk"),
		{0, 0, 0, 5, 'B'},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(append(append([]byte(nil), postfix...), data...)) //nolint:errcheck
		c.(*net.TCPConn).CloseWrite()                             //nolint:errcheck
		c.SetReadDeadline(time.Now().Add(5 * time.Second))        //nolint:errcheck
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("the connection stayed open after the MTA's end of file")
				}
				break
			}
		}
		if l := logs.Take(); strings.Contains(l, "panic") {
			t.Fatalf("panic: %s", l)
		}
		for _, e := range events() {
			if strings.HasPrefix(e, "header :") {
				t.Fatalf("a header without a name: %q", e)
			}
		}
	})
}
