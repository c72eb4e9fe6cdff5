package signature

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
)

// BackendKey is a compiled backend signature key (DESIGN.md "Backend signature"): the
// gateway signs each call it forwards with it, so the backend can tell the call came
// through the gateway. Immutable after NewBackendKey and safe for concurrent use.
type BackendKey struct {
	key    string
	keyB   []byte // key, as the header's value
	secret *Secret
}

// NewBackendKey compiles a backend key: key is sent in
// X-Ca-Proxy-Signature-Secret-Key to name it, secret signs. Build it once per
// configuration, not per request.
func NewBackendKey(key, secret string) *BackendKey {
	return &BackendKey{key: key, keyB: []byte(key), secret: NewSecret(secret)}
}

// Key returns the key's name as sent to the backend.
func (k *BackendKey) Key() string { return k.key }

// Sign signs the outgoing backend request req, which must be final (method, URI,
// headers and body as they will be sent): it sets X-Ca-Proxy-Signature-Secret-Key,
// X-Ca-Proxy-Signature-Headers and X-Ca-Proxy-Signature, replacing any a client sent.
// The signed headers are every X-Ca-* header of req plus headers, the names of the
// header parameters the gateway adds (mapped, constant and system parameters); names
// are lower-cased, sorted, deduplicated. A listed header that req lacks is signed
// with an empty value.
//
// Sign allocates nothing once sc's buffers have grown, for up to 32 parameters, and
// takes no lock. sc.StringToSign holds the backend string-to-sign afterwards.
func (k *BackendKey) Sign(req *fasthttp.Request, headers []string, sc *Scratch) {
	h := &req.Header
	x := &sc.hx
	x.build(h)
	ns := &sc.names
	ns.reset()
	if !ns.addXCa(x) {
		// A client sent headers of the backend signature: they go, and are not signed.
		stripProxySignature(h)
		x.build(h)
		ns.reset()
		ns.addXCa(x)
	}
	for _, name := range headers {
		ns.add([]byte(name))
	}
	names := ns.sorted(x)

	b := append(sc.sts[:0], h.Method()...)
	b = append(b, '\n')
	if body := req.Body(); len(body) > 0 && !isForm(h.ContentType()) && (h.IsPost() || h.IsPut()) {
		d := md5.Sum(body)
		b = base64.StdEncoding.AppendEncode(b, d[:])
	}
	b = append(b, '\n')
	for i, name := range names {
		b = append(b, name...)
		b = append(b, ':')
		b = append(b, ns.vals[i]...)
		b = append(b, '\n')
	}
	// The path as fasthttp will write it, decoded: what a backend reads as its path
	// whatever escaping the wire used. Written verbatim, it is the path as set; the
	// request URI would also serialize the query again, only to be cut off here.
	var path []byte
	if u := req.URI(); u.DisablePathNormalizing {
		path = u.PathOriginal()
	} else {
		path = u.RequestURI()
		if i := bytes.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	sc.sts = appendPathAndParameters(b, req, x, path, true)

	// The names are canonical already: SetCanonical skips normalizing them again.
	h.SetCanonical(canonProxySignatureSecretKey, k.keyB)
	h.SetCanonical(canonProxySignatureHeaders, ns.list)
	h.SetCanonical(canonProxySignature, sc.ms.signature(k.secret, HmacSHA256, sc.sts))
}

// stripProxySignature deletes the backend signature's headers from h.
func stripProxySignature(h *fasthttp.RequestHeader) {
	h.DelBytes(canonProxySignature)
	h.DelBytes(canonProxySignatureHeaders)
	h.DelBytes(canonProxySignatureSecretKey)
}

var (
	canonProxySignature          = []byte(HeaderProxySignature)
	canonProxySignatureHeaders   = []byte(HeaderProxySignatureHeaders)
	canonProxySignatureSecretKey = []byte(HeaderProxySignatureSecretKey)
)

// VerifyBackendRequest checks the gateway's signature on a request a backend
// received: secretFor returns the secret of the backend key named in
// X-Ca-Proxy-Signature-Secret-Key (several keys may be live while one rotates). It
// returns nil, ErrMissingProxySignature, ErrUnknownBackendKey or
// ErrInvalidProxySignature, or an error reading the body. It reads the body when the
// signature covers it (a form, or a POST or PUT body) and puts an equal one back, so
// the handler can still read it. Answer a failure with 403.
//
// It is for backend authors (net/http, no fasthttp needed) and is safe for concurrent
// use; it allocates, as net/http handlers do.
func VerifyBackendRequest(r *http.Request, secretFor func(key string) (string, bool)) error {
	sig := r.Header.Get(HeaderProxySignature)
	key := r.Header.Get(HeaderProxySignatureSecretKey)
	if sig == "" || key == "" {
		return ErrMissingProxySignature
	}
	secret, ok := secretFor(key)
	if !ok {
		return ErrUnknownBackendKey
	}
	sts, err := BackendStringToSign(r)
	if err != nil {
		return err
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(sts)
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return ErrInvalidProxySignature
	}
	return nil
}

// BackendStringToSign returns the backend string-to-sign of a received request, as
// VerifyBackendRequest computes it: for a backend's debug log when a signature fails.
// It reads and restores the body like VerifyBackendRequest.
func BackendStringToSign(r *http.Request) ([]byte, error) {
	form := isForm([]byte(r.Header.Get("Content-Type")))
	var body []byte
	if form || r.Method == http.MethodPost || r.Method == http.MethodPut {
		var err error
		if body, err = readAndRestoreBody(r); err != nil {
			return nil, err
		}
	}
	b := append([]byte(nil), r.Method...)
	b = append(b, '\n')
	if len(body) > 0 && !form && (r.Method == http.MethodPost || r.Method == http.MethodPut) {
		b = appendContentMD5(b, body)
	}
	b = append(b, '\n')
	for _, name := range strings.Split(r.Header.Get(HeaderProxySignatureHeaders), ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		b = append(b, name...)
		b = append(b, ':')
		b = append(b, r.Header.Get(name)...)
		b = append(b, '\n')
	}
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	b = append(b, path...)
	ps := parseArgs(nil, []byte(r.URL.RawQuery))
	if form {
		ps = parseArgs(ps, body)
	}
	return appendParams(b, ps), nil
}
