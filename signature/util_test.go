package signature

import (
	"bufio"
	"bytes"
	"fmt"
	"hash"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

type hashHash = hash.Hash

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// wire builds the request a server parses from this request line, headers and body.
func wire(t testing.TB, method, uri string, headers []string, body string) *fasthttp.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString(method + " " + uri + " HTTP/1.1\r\nHost: api.example.com\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == "POST" || method == "PUT" {
		b.WriteString("Content-Length: " + itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return parseRequest(t, b.String())
}

func itoa(n int) string {
	return string(appendInt(nil, n))
}

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// overTheWire writes a client request as fasthttp sends it and parses it back as a
// server does, so tests check what actually travels.
func overTheWire(t testing.TB, req *fasthttp.Request) *fasthttp.Request {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := req.Write(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return parseRequest(t, buf.String())
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }
