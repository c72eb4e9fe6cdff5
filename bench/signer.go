package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"sort"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// signer signs GET requests the way an Alibaba Cloud API Gateway client does
// (HmacSHA256, DESIGN.md "App signatures"), with a fresh nonce and timestamp
// per call. One signer belongs to one connection: it is not safe for
// concurrent use.
type signer struct {
	key    string
	mac    hash.Hash
	prefix string // random per signer, so nonces never repeat across runs
	seq    uint64
	buf    []byte
	sum    []byte
	sig    []byte
	hdrs   [][2]string
}

func newSigner(key, secret string) *signer {
	var r [8]byte
	_, _ = rand.Read(r[:])
	return &signer{
		key:    key,
		mac:    hmac.New(sha256.New, []byte(secret)),
		prefix: hex.EncodeToString(r[:]) + "-",
	}
}

// signedHeaders is the X-Ca-Signature-Headers list the signer sends, sorted.
const signedHeaders = "x-ca-key,x-ca-nonce,x-ca-signature-method,x-ca-stage,x-ca-timestamp"

// sign sets the signature headers on req, whose method, URI and headers are
// otherwise complete. now is the call's time.
func (s *signer) sign(req *fasthttp.Request, now time.Time) {
	s.seq++
	nonce := s.prefix + strconv.FormatUint(s.seq, 10)
	ts := strconv.FormatInt(now.UnixMilli(), 10)
	stage := string(req.Header.Peek("X-Ca-Stage"))
	if stage == "" {
		stage = "RELEASE"
		req.Header.Set("X-Ca-Stage", stage)
	}
	req.Header.Set("X-Ca-Key", s.key)
	req.Header.Set("X-Ca-Nonce", nonce)
	req.Header.Set("X-Ca-Timestamp", ts)
	req.Header.Set("X-Ca-Signature-Method", "HmacSHA256")
	req.Header.Set("X-Ca-Signature-Headers", signedHeaders)

	s.hdrs = append(s.hdrs[:0],
		[2]string{"x-ca-key", s.key}, [2]string{"x-ca-nonce", nonce},
		[2]string{"x-ca-signature-method", "HmacSHA256"},
		[2]string{"x-ca-stage", stage}, [2]string{"x-ca-timestamp", ts})
	b := appendStringToSign(s.buf[:0], req, s.hdrs)
	s.buf = b

	s.mac.Reset()
	s.mac.Write(b)
	s.sum = s.mac.Sum(s.sum[:0])
	n := base64.StdEncoding.EncodedLen(len(s.sum))
	if cap(s.sig) < n {
		s.sig = make([]byte, n)
	}
	s.sig = s.sig[:n]
	base64.StdEncoding.Encode(s.sig, s.sum)
	req.Header.SetBytesV("X-Ca-Signature", s.sig)
}

// appendStringToSign appends req's string-to-sign, headers being the signed
// headers as name (as listed in X-Ca-Signature-Headers) and value, in order.
func appendStringToSign(b []byte, req *fasthttp.Request, headers [][2]string) []byte {
	b = append(b, req.Header.Method()...)
	b = append(b, '\n')
	b = append(b, req.Header.Peek("Accept")...)
	b = append(b, '\n')
	b = append(b, req.Header.Peek("Content-MD5")...)
	b = append(b, '\n')
	b = append(b, req.Header.ContentType()...)
	b = append(b, '\n')
	b = append(b, req.Header.Peek("Date")...)
	b = append(b, '\n')
	for _, kv := range headers {
		b = append(b, kv[0]...)
		b = append(b, ':')
		b = append(b, kv[1]...)
		b = append(b, '\n')
	}
	return appendPathAndParameters(b, req.URI())
}

// appendPathAndParameters appends the path, then "?" and the query
// parameters sorted by key, values decoded ("key" alone when empty).
func appendPathAndParameters(b []byte, u *fasthttp.URI) []byte {
	b = append(b, u.Path()...)
	args := u.QueryArgs()
	if args.Len() == 0 {
		return b
	}
	type kv struct{ k, v string }
	var kvs []kv
	for k, v := range args.All() {
		kvs = append(kvs, kv{string(k), string(v)})
	}
	sort.SliceStable(kvs, func(i, j int) bool { return kvs[i].k < kvs[j].k })
	b = append(b, '?')
	for i, p := range kvs {
		if i > 0 {
			b = append(b, '&')
		}
		b = append(b, p.k...)
		if p.v != "" {
			b = append(b, '=')
			b = append(b, p.v...)
		}
	}
	return b
}
