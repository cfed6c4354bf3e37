package mailauth

import (
	"bufio"
	"io"
	"sync"
)

// bufReaders are the buffered readers the engine reads a spooled message
// with (its header, then the body for the DKIM hashes): one of each per
// message, 4 KiB each, was a tenth of what the milter allocated.
var bufReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func getReader(r io.Reader) *bufio.Reader {
	br := bufReaders.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

// putReader gives br back; nothing may use it after.
func putReader(br *bufio.Reader) {
	br.Reset(nil)
	bufReaders.Put(br)
}
