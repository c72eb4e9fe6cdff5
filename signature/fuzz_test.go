package signature

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// FuzzStringToSign canonicalizes arbitrary requests. Properties: no panic; the same
// request gives the same string twice; the string starts with the five fixed lines;
// a request signed over that string verifies, and one with a flipped signature does
// not; the error message rendered from it is a valid header value.
func FuzzStringToSign(f *testing.F) {
	f.Add("GET", "/cities/paris?days=3&unit=c", "x-ca-key,x-ca-nonce", "", "")
	f.Add("POST", "/login?src=app", "x-ca-key", "application/x-www-form-urlencoded", "user=ann+lee&pin=%31&pin=2")
	f.Add("POST", "/o%20k/%E5%8C%97?a=&b&=c&%zz=1", " X-Tenant , x-ca-signature ,", "application/json", `{"a":1}`)
	f.Fuzz(func(t *testing.T, method, uri, list, contentType, body string) {
		if !validToken(method) || !strings.HasPrefix(uri, "/") || !validHeaderValue(uri+list+contentType) {
			return
		}
		if strings.ContainsAny(uri, " #") {
			return
		}
		headers := []string{
			"X-Ca-Timestamp: " + strconv.FormatInt(t0.UnixMilli(), 10),
			"X-Tenant: acme",
		}
		if list != "" {
			headers = append(headers, "X-Ca-Signature-Headers: "+list)
		}
		if contentType != "" {
			headers = append(headers, "Content-Type: "+contentType)
		}
		req, ok := tryWire(method, uri, headers, body)
		if !ok {
			return
		}
		a := AppendStringToSign(nil, req)
		b := AppendStringToSign(make([]byte, 3, 64), req)[3:]
		if !bytes.Equal(a, b) {
			t.Fatalf("not deterministic:\n%q\n%q", a, b)
		}
		if !bytes.HasPrefix(a, append([]byte(method), '\n')) || bytes.Count(a, []byte{'\n'}) < 5 {
			t.Fatalf("malformed string-to-sign %q", a)
		}
		var ms macScratch
		sec := NewSecret("fuzz-secret")
		req.Header.SetBytesV(HeaderSignature, ms.signature(sec, HmacSHA256, a))
		var sc Scratch
		if err := (&Verifier{}).Verify(req, []*Secret{sec}, t0, &sc); err != nil {
			t.Fatalf("signed over its own string-to-sign, refused: %v\n%q", err, a)
		}
		if !bytes.Equal(sc.StringToSign(), a) {
			t.Fatalf("Verify computed %q, AppendStringToSign %q", sc.StringToSign(), a)
		}
		sig := []byte(req.Header.Peek(HeaderSignature))
		sig[0] ^= 1
		req.Header.SetBytesV(HeaderSignature, sig)
		if err := (&Verifier{}).Verify(req, []*Secret{sec}, t0, &sc); err != ErrInvalidSignature {
			t.Fatalf("flipped signature: %v", err)
		}
		msg := AppendInvalidSignatureMessage(nil, sc.StringToSign())
		if !validHeaderValue(string(msg)) {
			t.Fatalf("message is no valid header value: %q", msg)
		}
	})
}

// FuzzHeaderParsing checks the header parsers: the signed-headers list, the timestamp,
// the method, and the urlencoded parser of the net/http side against fasthttp's.
func FuzzHeaderParsing(f *testing.F) {
	f.Add("x-ca-key,x-ca-nonce", "1795910400000", "HmacSHA256", "a=1&b=&c&a=2")
	f.Add(" ,X-Ca-Signature,, x-b ", "-1", "hmacsha1", "%zz=%4&+=+&&=")
	f.Add("x-ca-signature-headers", "99999999999999999999", "HmacMD5", "q=%E5%8C%97%E4%BA%AC")
	f.Fuzz(func(t *testing.T, list, ts, method, query string) {
		for _, n := range splitHeaderList(nil, []byte(list)) {
			if len(n) == 0 || !bytes.Equal(n, trimOWS(n)) || bytes.ContainsRune(n, ',') {
				t.Fatalf("bad name %q from %q", n, list)
			}
			if bytes.EqualFold(n, []byte(HeaderSignature)) || bytes.EqualFold(n, []byte(HeaderSignatureHeaders)) {
				t.Fatalf("signature header %q kept", n)
			}
		}
		ms, ok := parseMillis([]byte(ts))
		want, err := strconv.ParseInt(ts, 10, 64)
		digits := ts != "" && strings.Trim(ts, "0123456789") == "" && len(ts) <= maxTimestampDigits
		if ok != digits || (ok && (err != nil || ms != want)) {
			t.Fatalf("parseMillis(%q) = %d, %v; strconv %d, %v", ts, ms, ok, want, err)
		}
		if m, ok := ParseMethod([]byte(method)); ok && method != "" && !strings.EqualFold(method, m.String()) {
			t.Fatalf("ParseMethod(%q) = %v", method, m)
		}
		var args fasthttp.Args
		args.Parse(query)
		ps := parseArgs(nil, []byte(query))
		i := 0
		for k, v := range args.All() {
			if i >= len(ps) || !bytes.Equal(ps[i].k, k) || !bytes.Equal(ps[i].v, v) {
				t.Fatalf("%q: parseArgs %q differs from fasthttp at %d (%q=%q)", query, ps, i, k, v)
			}
			i++
		}
		if i != len(ps) {
			t.Fatalf("%q: parseArgs gives %d pairs, fasthttp %d", query, len(ps), i)
		}
	})
}

func tryWire(method, uri string, headers []string, body string) (*fasthttp.Request, bool) {
	var b strings.Builder
	b.WriteString(method + " " + uri + " HTTP/1.1\r\nHost: h\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	req := new(fasthttp.Request)
	if err := req.ReadLimitBody(bufioReader(b.String()), 1<<20); err != nil {
		return nil, false
	}
	return req, true
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s can travel in a header value: no control bytes.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
