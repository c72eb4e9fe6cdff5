package signature

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// vector is one request of testdata/signature-vectors.json, signed by Alibaba's
// Node.js client (npm aliyun-api-gateway).
type vector struct {
	Name         string            `json:"name"`
	Method       string            `json:"method"`
	URL          string            `json:"url"`
	Headers      map[string]any    `json:"headers"`
	Body         *string           `json:"body"`
	Form         map[string]string `json:"form"`
	AppKey       string            `json:"appKey"`
	AppSecret    string            `json:"appSecret"`
	StringToSign string            `json:"stringToSign"`
	SHA256       string            `json:"signatureHmacSHA256"`
	SHA1         string            `json:"signatureHmacSHA1"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/signature-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber() // keep x-ca-timestamp's digits as the client sent them
	if err := d.Decode(&vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 7 {
		t.Fatalf("only %d vectors", len(vs))
	}
	return vs
}

// serverRequest builds the request a fasthttp server hands to the proxy for v: the
// vector's request written on the wire as the Node client sends it, then parsed.
func serverRequest(t testing.TB, v vector, method string) *fasthttp.Request {
	t.Helper()
	u, err := url.Parse(v.URL)
	if err != nil {
		t.Fatal(err)
	}
	var raw strings.Builder
	fmt.Fprintf(&raw, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, u.RequestURI(), u.Host)
	for k, val := range v.Headers {
		fmt.Fprintf(&raw, "%s: %v\r\n", k, val)
	}
	body := ""
	if v.Body != nil {
		body = *v.Body
	}
	if v.Form != nil && body == "" {
		f := url.Values{}
		for k, val := range v.Form {
			f.Set(k, val)
		}
		body = f.Encode()
	}
	fmt.Fprintf(&raw, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return parseRequest(t, raw.String())
}

func parseRequest(t testing.TB, raw string) *fasthttp.Request {
	t.Helper()
	req := new(fasthttp.Request)
	if err := req.ReadLimitBody(bufioReader(raw), 1<<20); err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	return req
}

func hmacB64(h func() hashHash, secret, msg string) string {
	m := hmac.New(h, []byte(secret))
	m.Write([]byte(msg))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TestVectors reproduces every vector: the string-to-sign exactly, the HmacSHA256 and
// HmacSHA1 signatures, and Verify accepting the request signed either way.
func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			req := serverRequest(t, v, v.Method)
			got := string(AppendStringToSign(nil, req))
			if got != v.StringToSign {
				t.Fatalf("string-to-sign\n got %q\nwant %q", got, v.StringToSign)
			}
			if s := hmacB64(sha256.New, v.AppSecret, got); s != v.SHA256 {
				t.Errorf("crypto/hmac SHA256 %s, vector %s", s, v.SHA256)
			}
			if s := hmacB64(sha1.New, v.AppSecret, got); s != v.SHA1 {
				t.Errorf("crypto/hmac SHA1 %s, vector %s", s, v.SHA1)
			}
			var ms macScratch
			sec := NewSecret(v.AppSecret)
			if s := string(ms.signature(sec, HmacSHA256, []byte(got))); s != v.SHA256 {
				t.Errorf("HmacSHA256 %s, want %s", s, v.SHA256)
			}
			if s := string(ms.signature(sec, HmacSHA1, []byte(got))); s != v.SHA1 {
				t.Errorf("HmacSHA1 %s, want %s", s, v.SHA1)
			}

			millis, err := v.Headers["x-ca-timestamp"].(json.Number).Int64()
			if err != nil {
				t.Fatal(err)
			}
			ts := time.UnixMilli(millis)
			now := ts.Add(3 * time.Minute)
			var sc Scratch
			ver := Verifier{}
			req.Header.Set(HeaderSignature, v.SHA256)
			if err := ver.Verify(req, []*Secret{sec}, now, &sc); err != nil {
				t.Errorf("Verify HmacSHA256: %v (server %q)", err, sc.StringToSign())
			}
			req.Header.Set(HeaderSignature, v.SHA1)
			req.Header.Set(HeaderSignatureMethod, "HmacSHA1")
			if err := ver.Verify(req, []*Secret{sec}, now, &sc); err != nil {
				t.Errorf("Verify HmacSHA1: %v", err)
			}
			req.Header.Set(HeaderSignature, v.SHA256) // right MAC, wrong method
			if err := ver.Verify(req, []*Secret{sec}, now, &sc); err != ErrInvalidSignature {
				t.Errorf("SHA256 signature sent as HmacSHA1: %v, want ErrInvalidSignature", err)
			}
		})
	}
}
