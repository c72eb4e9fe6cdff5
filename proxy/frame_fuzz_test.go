package proxy

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzFrameChunks holds frameChunks to fasthttp's own reading of a chunked answer.
// frameChunks only frames; whether the body is valid is fasthttp's to say (the loop
// parses what it framed and leaves anything fasthttp refuses to the goroutine path).
// So: what it calls whole, fasthttp reads to exactly that length, or refuses both
// with and without the bytes after it; what fasthttp reads whole, it never calls
// unfinished (the loop would wait until the backend's timeout for bytes that never
// come). It may call a body "other": a goroutine running fasthttp then reads it.
func FuzzFrameChunks(f *testing.F) {
	for _, s := range []string{
		"3\r\nabc\r\n0\r\n\r\n", "3;x=\"y\"\r\nabc\r\n0\r\nT: v\r\n\r\n", "A\r\n0123456789\r\n0\r\n\r\n",
		"3\nabc\n0\n\n", "3 \r\nabc\r\n0\r\n\r\n", "0\r\n\r\n", "3\r\nab", "ffffffffffff\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		n, verdict := frameChunks(body)
		read, err := readChunked(body)
		switch verdict {
		case frameWhole:
			cut, cutErr := readChunked(body[:n])
			switch {
			case err == nil && read != n:
				t.Fatalf("frameChunks(%q) = whole %d; fasthttp read %d", body, n, read)
			case err == nil && cutErr != nil:
				t.Fatalf("frameChunks(%q) = whole %d; fasthttp reads it all, but not its first %d bytes: %v", body, n, n, cutErr)
			case err != nil && cutErr == nil:
				t.Fatalf("frameChunks(%q) = whole %d; fasthttp reads those %d bytes (%d) but refuses the whole: %v", body, n, n, cut, err)
			}
		case frameMore:
			if err == nil {
				t.Fatalf("frameChunks(%q) waits for more; fasthttp read it whole (%d bytes)", body, read)
			}
		}
	})
}

// readChunked reads body as a chunked answer's, limited as the backend client reads,
// and returns how many of its bytes fasthttp took.
func readChunked(body []byte) (int, error) {
	head := []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	var resp fasthttp.Response
	rd := bytes.NewReader(append(append([]byte(nil), head...), body...))
	br := bufio.NewReader(rd)
	err := resp.ReadLimitBody(br, 1<<20)
	return len(body) - rd.Len() - br.Buffered(), err
}
