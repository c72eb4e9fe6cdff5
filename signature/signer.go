package signature

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Signer signs requests as an Alibaba Cloud API Gateway client does (the Node.js SDK's
// conventions): it sets X-Ca-Key, X-Ca-Timestamp, a fresh random X-Ca-Nonce,
// X-Ca-Signature-Method, X-Ca-Stage when Stage is set, Content-MD5 when ContentMD5
// is set, then signs every X-Ca-* header of the request plus Headers, listing them
// lower-cased in X-Ca-Signature-Headers, and sets X-Ca-Signature.
//
// Set the exported fields before first use; after that a Signer is safe for
// concurrent use. The `tollgate call` command, the benchmark and the tests use it.
type Signer struct {
	// Key is the app's AppKey.
	Key string
	// Method is the HMAC to sign with; the zero value is HmacSHA256.
	Method Method
	// Stage, when not empty, is sent in X-Ca-Stage.
	Stage string
	// Headers names further headers to sign, beside the X-Ca-* ones.
	Headers []string
	// ContentMD5 sends Content-MD5 for a non-empty body that is not a form.
	ContentMD5 bool
	// Now is the clock for X-Ca-Timestamp; nil means time.Now.
	Now func() time.Time

	secret *Secret
	pool   sync.Pool // of *signScratch
}

// NewSigner returns a Signer for the app with this AppKey and AppSecret.
func NewSigner(key, secret string) *Signer {
	return &Signer{Key: key, secret: NewSecret(secret)}
}

type signScratch struct {
	ms    macScratch
	val   []byte
	names nameSet
	hx    headerIndex
	hn    []string // SignHTTP's names
	list  []byte
}

func (s *Signer) scratch() *signScratch {
	if sc, ok := s.pool.Get().(*signScratch); ok {
		return sc
	}
	return new(signScratch)
}

func (s *Signer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// AppendSign signs req, which must be complete (method, URI, headers, body) but for
// the signature headers, and appends the string-to-sign it signed to dst. The path
// signed is the one fasthttp will write for req. Any signature headers already on req
// (a reused request) are replaced.
func (s *Signer) AppendSign(dst []byte, req *fasthttp.Request) []byte {
	sc := s.scratch()
	defer s.pool.Put(sc)
	h := &req.Header

	h.Set(HeaderKey, s.Key)
	sc.val = strconv.AppendInt(sc.val[:0], s.now().UnixMilli(), 10)
	h.SetBytesV(HeaderTimestamp, sc.val)
	sc.val = appendUUID(sc.val[:0])
	h.SetBytesV(HeaderNonce, sc.val)
	h.Set(HeaderSignatureMethod, s.Method.String())
	if s.Stage != "" {
		h.Set(HeaderStage, s.Stage)
	}
	h.Del(HeaderSignature)
	h.Del(HeaderSignatureHeaders)
	body := req.Body()
	if len(body) > 0 && len(h.ContentType()) == 0 {
		// fasthttp would send application/octet-stream on its own; say so, so that the
		// Content-Type line signed is the one sent.
		h.SetContentType("application/octet-stream")
	}
	if s.ContentMD5 && len(body) > 0 && !isForm(h.ContentType()) {
		sc.val = appendContentMD5(sc.val[:0], body)
		h.SetBytesV(HeaderContentMD5, sc.val)
	}

	sc.names.reset()
	sc.hx.build(h)
	sc.names.addXCa(&sc.hx)
	for _, k := range s.Headers {
		sc.names.add([]byte(k))
	}
	sc.names.sorted(&sc.hx)
	h.SetBytesV(HeaderSignatureHeaders, sc.names.list)

	path := req.URI().RequestURI()
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	start := len(dst)
	sc.hx.build(h)
	dst = appendStringToSign(dst, req, &sc.hx, path, false)
	h.SetBytesV(HeaderSignature, sc.ms.signature(s.secret, s.Method, dst[start:]))
	return dst
}

// Sign signs req (see AppendSign) and returns the string-to-sign.
func (s *Signer) Sign(req *fasthttp.Request) string {
	return string(s.AppendSign(nil, req))
}

// joinNames sorts and dedups sc.hn and joins them with commas.
func (sc *signScratch) joinNames() []byte {
	slices.Sort(sc.hn)
	sc.hn = slices.Compact(sc.hn)
	sc.list = sc.list[:0]
	for i, n := range sc.hn {
		if i > 0 {
			sc.list = append(sc.list, ',')
		}
		sc.list = append(sc.list, n...)
	}
	return sc.list
}

// SignHTTP signs a net/http request the same way and returns the string-to-sign. It
// reads a form body (to sign its parameters) or, with ContentMD5, any body, and puts
// it back so the request can still be sent. The path signed is r.URL.EscapedPath(),
// which is what net/http writes.
func (s *Signer) SignHTTP(r *http.Request) (string, error) {
	sc := s.scratch()
	defer s.pool.Put(sc)
	h := r.Header
	if h == nil {
		h = make(http.Header)
		r.Header = h
	}
	h.Set(HeaderKey, s.Key)
	h.Set(HeaderTimestamp, strconv.FormatInt(s.now().UnixMilli(), 10))
	h.Set(HeaderNonce, string(appendUUID(nil)))
	h.Set(HeaderSignatureMethod, s.Method.String())
	if s.Stage != "" {
		h.Set(HeaderStage, s.Stage)
	}
	h.Del(HeaderSignature)
	h.Del(HeaderSignatureHeaders)

	form := isForm([]byte(h.Get("Content-Type")))
	var body []byte
	if form || s.ContentMD5 {
		var err error
		if body, err = readAndRestoreBody(r); err != nil {
			return "", err
		}
	}
	if s.ContentMD5 && len(body) > 0 && !form {
		h.Set(HeaderContentMD5, string(appendContentMD5(nil, body)))
	}

	sc.hn = sc.hn[:0]
	for k := range h {
		if hasPrefixFold([]byte(k), "x-ca-") {
			sc.hn = append(sc.hn, strings.ToLower(k))
		}
	}
	for _, k := range s.Headers {
		sc.hn = append(sc.hn, strings.ToLower(k))
	}
	h.Set(HeaderSignatureHeaders, string(sc.joinNames()))

	var b []byte
	for _, line := range []string{r.Method, h.Get(HeaderAccept), h.Get(HeaderContentMD5), h.Get("Content-Type"), h.Get(HeaderDate)} {
		b = append(b, line...)
		b = append(b, '\n')
	}
	for _, n := range sc.hn {
		b = append(b, n...)
		b = append(b, ':')
		b = append(b, h.Get(n)...)
		b = append(b, '\n')
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	b = append(b, path...)
	ps := parseArgs(nil, []byte(r.URL.RawQuery))
	if form {
		ps = parseArgs(ps, body)
	}
	b = appendParams(b, ps)
	h.Set(HeaderSignature, string(sc.ms.signature(s.secret, s.Method, b)))
	return string(b), nil
}

// readAndRestoreBody reads r's body and replaces it by an equal one, so the request
// can still be sent or handled.
func readAndRestoreBody(r *http.Request) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	return body, nil
}

// parseArgs appends the decoded parameters of an urlencoded string to ps, as fasthttp
// parses query and form arguments: split at '&', key and value at the first '=',
// %XX and '+' decoded, pairs with an empty key and value skipped.
func parseArgs(ps []param, s []byte) []param {
	for len(s) > 0 {
		var pair []byte
		if i := bytes.IndexByte(s, '&'); i >= 0 {
			pair, s = s[:i], s[i+1:]
		} else {
			pair, s = s, nil
		}
		k, v, _ := bytes.Cut(pair, []byte{'='})
		k = appendPercentDecoded(nil, k, true)
		v = appendPercentDecoded(nil, v, true)
		if len(k) > 0 || len(v) > 0 {
			ps = append(ps, param{k, v})
		}
	}
	return ps
}

// appendContentMD5 appends base64(md5(body)).
func appendContentMD5(dst, body []byte) []byte {
	d := md5.Sum(body)
	return base64.StdEncoding.AppendEncode(dst, d[:])
}

// appendUUID appends a random (version 4) UUID in its 36-character form.
func appendUUID(dst []byte) []byte {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const hexDigits = "0123456789abcdef"
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return dst
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix, in any case.
func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && equalFold(b[:len(prefix)], prefix)
}
