package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func benchVerify(b *testing.B, name string, nonces NonceStore) {
	var v vector
	for _, x := range loadVectors(b) {
		if x.Name == name {
			v = x
		}
	}
	req := serverRequest(b, v, v.Method)
	req.Header.Set(HeaderSignature, v.SHA256)
	secrets := []*Secret{NewSecret(v.AppSecret)}
	ms, _ := parseMillis(req.Header.Peek(HeaderTimestamp))
	now := time.UnixMilli(ms)
	ver := Verifier{Nonces: nonces}
	var sc Scratch
	b.ReportAllocs()
	for b.Loop() {
		if err := ver.Verify(req, secrets, now, &sc); err != nil && err != ErrNonceUsed {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyGetQuery(b *testing.B) { benchVerify(b, "get-with-query", nil) }
func BenchmarkVerifyPostForm(b *testing.B) { benchVerify(b, "post-form", nil) }
func BenchmarkVerifyPostMD5(b *testing.B)  { benchVerify(b, "post-json-md5", nil) }
func BenchmarkVerifyWithNonceStore(b *testing.B) {
	benchVerify(b, "get-with-query", NewLocalNonceStore(0, 1<<16))
}

// BenchmarkVerifyParallel runs Verify on every core, one request and Scratch per
// goroutine as the proxy would: it shows no shared state slows it down.
func BenchmarkVerifyParallel(b *testing.B) {
	v := loadVectors(b)[0]
	secrets := []*Secret{NewSecret(v.AppSecret)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := serverRequest(b, v, v.Method)
		req.Header.Set(HeaderSignature, v.SHA256)
		ms, _ := parseMillis(req.Header.Peek(HeaderTimestamp))
		now := time.UnixMilli(ms)
		var sc Scratch
		var ver Verifier
		for pb.Next() {
			if err := ver.Verify(req, secrets, now, &sc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkAppendStringToSign(b *testing.B) {
	v := loadVectors(b)[0]
	req := serverRequest(b, v, v.Method)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendStringToSign(buf[:0], req)
	}
}

// BenchmarkHMACPerRequest is the cost Secret avoids: a keyed crypto/hmac built per
// request over the same string.
func BenchmarkHMACPerRequest(b *testing.B) {
	v := loadVectors(b)[0]
	msg := []byte(v.StringToSign)
	key := []byte(v.AppSecret)
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha256.New, key)
		m.Write(msg)
		_ = m.Sum(nil)
	}
}

func BenchmarkSecretMAC(b *testing.B) {
	v := loadVectors(b)[0]
	msg := []byte(v.StringToSign)
	s := NewSecret(v.AppSecret)
	var ms macScratch
	b.ReportAllocs()
	for b.Loop() {
		_ = ms.mac(s, HmacSHA256, msg)
	}
}

func BenchmarkBackendSign(b *testing.B) {
	req := new(fasthttp.Request)
	req.SetRequestURI("http://127.0.0.1:9001/v2/weather/paris?days=3&unit=c")
	req.Header.Set("X-Ca-Request-Id", "5f0c0f6e-0000-4000-8000-000000000000")
	req.Header.Set("X-Ca-Key", "203752345")
	req.Header.Set("X-Days", "3")
	benchBackendSign(b, req, NewBackendKey("DemoKey1", "DemoSecret1"), []string{"x-days"})
}

// BenchmarkSignerSign is the load generator's cost per request.
func BenchmarkSignerSign(b *testing.B) {
	s := NewSigner("203752345", "vA3dXFi3Gx5hZK7bW1sGmkKp4oQ2rT8u")
	s.Stage = "RELEASE"
	req := new(fasthttp.Request)
	req.SetRequestURI("http://weather.localhost:8080/cities/paris?days=3&unit=c")
	req.Header.Set("Accept", "application/json")
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = s.AppendSign(buf[:0], req)
	}
}

func BenchmarkLocalNonceStoreParallel(b *testing.B) {
	s := NewLocalNonceStore(time.Minute, 1<<20)
	var seq atomic.Uint64
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := make([]byte, 0, 40)
		base := seq.Add(1) << 40
		for i := uint64(0); pb.Next(); i++ {
			n = strconv.AppendUint(n[:0], base+i, 10)
			s.Use(n, now)
		}
	})
}

// BenchmarkBackendSignFull signs the backend request of the bench's full scenario:
// the client's six X-Ca-* headers in the order the SDKs send them, the gateway's
// forwarding headers and one mapped header parameter.
func BenchmarkBackendSignFull(b *testing.B) {
	req := new(fasthttp.Request)
	req.SetRequestURI("http://127.0.0.1:9001/json?days=5&unit=c&lang=en")
	req.URI().DisablePathNormalizing = true // as the gateway sends it
	for _, kv := range [][2]string{
		{"User-Agent", "tollgate-bench"}, {"Accept", "application/json"}, {"X-Trace", "bench"},
		{"X-Ca-Key", "204000001"}, {"X-Ca-Timestamp", "1795919468627"},
		{"X-Ca-Nonce", "0b9f2c4e-5d1a-4f3b-8e7c-6a5d4c3b2a19"}, {"X-Ca-Signature-Method", "HmacSHA256"},
		{"X-Ca-Signature-Headers", "x-ca-key,x-ca-nonce,x-ca-signature-method,x-ca-timestamp"},
		{"X-Ca-Signature", "B5BMvQdQhxCmL9VCkqKxQbhqsy+f67wfJNJ1H8kFjJY="},
		{"X-Forwarded-Host", "bench.localhost"}, {"X-Forwarded-For", "127.0.0.1"}, {"X-Forwarded-Proto", "http"},
	} {
		req.Header.Set(kv[0], kv[1])
	}
	benchBackendSign(b, req, NewBackendKey("BenchKey", "BenchSecret"), []string{"x-trace"})
}

// benchBackendSign signs req over and over, taking the signature off after each
// round: the gateway's outgoing request has none yet, and one a client sent would
// send Sign down its slower path (strip and index again), which re-signing the same
// request would measure instead. The figure includes that strip (three header
// deletions, ~75 ns): stopping the timer around it would cost more than it does.
func benchBackendSign(b *testing.B, req *fasthttp.Request, key *BackendKey, headers []string) {
	var sc Scratch
	b.ReportAllocs()
	for b.Loop() {
		key.Sign(req, headers, &sc)
		stripProxySignature(&req.Header)
	}
}
