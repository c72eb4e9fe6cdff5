package param

import (
	"bufio"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

func ptr[T any](v T) *T { return &v }

func mustCompile(t testing.TB, def *fsm.APIDef, names ...string) *Plan {
	t.Helper()
	p, err := Compile(def, names)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// request builds a real fasthttp request by parsing its wire form, as the server
// hands it to the proxy.
func request(t testing.TB, method, uri string, headers [][2]string, contentType, body string) *fasthttp.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString(method + " " + uri + " HTTP/1.1\r\nHost: api.example.com\r\n")
	for _, h := range headers {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	if contentType != "" {
		b.WriteString("Content-Type: " + contentType + "\r\n")
	}
	if body != "" || method == "POST" {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n" + body)
	req := &fasthttp.Request{}
	if err := req.Read(bufio.NewReader(strings.NewReader(b.String()))); err != nil {
		t.Fatalf("parse request: %v", err)
	}
	return req
}

func msg(e *Error) string {
	if e == nil {
		return ""
	}
	return string(e.AppendMessage(nil))
}

func query(req *fasthttp.Request) url.Values {
	v, _ := url.ParseQuery(string(req.URI().QueryString()))
	return v
}

func form(req *fasthttp.Request) url.Values {
	v, _ := url.ParseQuery(string(req.Body()))
	return v
}
