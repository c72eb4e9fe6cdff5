package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestStringToSignVectors checks the bench's signer against the requests
// Alibaba's own client signed (the GET ones without body: all the bench sends).
func TestStringToSignVectors(t *testing.T) {
	path := filepath.Join(repoRoot(), "..", "shared", "signature-vectors.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("no vectors: %v", err)
	}
	var vecs []struct {
		Name, Method, URL, AppSecret, StringToSign string
		Headers                                    map[string]any
		Body, Form                                 any
		SignatureHmacSHA256                        string
	}
	if err := json.Unmarshal(raw, &vecs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, v := range vecs {
		if v.Method != "GET" || v.Body != nil || v.Form != nil {
			continue
		}
		n++
		t.Run(v.Name, func(t *testing.T) {
			var req fasthttp.Request
			req.SetRequestURI(v.URL)
			req.Header.SetMethod(v.Method)
			val := func(k string) string {
				for hk, hv := range v.Headers {
					if strings.EqualFold(hk, k) {
						return fmt.Sprint(hv)
					}
				}
				return ""
			}
			for hk := range v.Headers {
				req.Header.Set(hk, val(hk))
			}
			if n, ok := v.Headers["x-ca-timestamp"].(float64); ok {
				req.Header.Set("x-ca-timestamp", fmt.Sprintf("%.0f", n))
			}
			var hdrs [][2]string
			for _, name := range strings.Split(val("x-ca-signature-headers"), ",") {
				hdrs = append(hdrs, [2]string{name, string(req.Header.Peek(name))})
			}
			got := string(appendStringToSign(nil, &req, hdrs))
			if got != v.StringToSign {
				t.Fatalf("string to sign\n got %q\nwant %q", got, v.StringToSign)
			}
			m := hmac.New(sha256.New, []byte(v.AppSecret))
			m.Write([]byte(got))
			if sig := base64.StdEncoding.EncodeToString(m.Sum(nil)); sig != v.SignatureHmacSHA256 {
				t.Fatalf("signature %s, want %s", sig, v.SignatureHmacSHA256)
			}
		})
	}
	if n == 0 {
		t.Skip("no GET vectors without body")
	}
}

// TestSignerFreshNonce checks that two calls differ in nonce and signature.
func TestSignerFreshNonce(t *testing.T) {
	s := newSigner("k", "secret")
	var a, b fasthttp.Request
	for _, r := range []*fasthttp.Request{&a, &b} {
		r.SetRequestURI("/signed/json")
		r.Header.SetHost("bench.localhost")
		s.sign(r, time.Now())
	}
	if string(a.Header.Peek("X-Ca-Nonce")) == string(b.Header.Peek("X-Ca-Nonce")) ||
		string(a.Header.Peek("X-Ca-Signature")) == string(b.Header.Peek("X-Ca-Signature")) {
		t.Fatal("nonce or signature repeated")
	}
}
