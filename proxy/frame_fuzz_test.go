package proxy

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzFrameChunks holds frameChunks to fasthttp's own reading of a chunked answer:
// what it calls whole, fasthttp reads to exactly that length; what fasthttp reads
// whole, it never calls unfinished (the loop would wait for bytes that never come
// until the backend's timeout). It may call a body fasthttp reads "other": the loop
// then leaves it to a goroutine running fasthttp, which is always right.
func FuzzFrameChunks(f *testing.F) {
	for _, s := range []string{
		"3\r\nabc\r\n0\r\n\r\n", "3;x=\"y\"\r\nabc\r\n0\r\nT: v\r\n\r\n", "A\r\n0123456789\r\n0\r\n\r\n",
		"3\nabc\n0\n\n", "3 \r\nabc\r\n0\r\n\r\n", "0\r\n\r\n", "3\r\nab", "ffffffffffff\r\n",
	} {
		f.Add([]byte(s))
	}
	head := []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Fuzz(func(t *testing.T, body []byte) {
		n, verdict := frameChunks(body)
		var resp fasthttp.Response
		rd := bytes.NewReader(append(append([]byte(nil), head...), body...))
		br := bufio.NewReader(rd)
		err := resp.ReadLimitBody(br, 1<<20) // limited, as the backend client reads
		read := len(head) + len(body) - rd.Len() - br.Buffered() - len(head)
		switch verdict {
		case frameWhole:
			if err != nil {
				t.Fatalf("frameChunks(%q) = whole %d; fasthttp: %v", body, n, err)
			}
			if read != n {
				t.Fatalf("frameChunks(%q) = whole %d; fasthttp read %d", body, n, read)
			}
		case frameMore:
			if err == nil {
				t.Fatalf("frameChunks(%q) waits for more; fasthttp read it whole (%d bytes)", body, read)
			}
		}
	})
}
