package signature

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"time"

	"github.com/valyala/fasthttp"
)

// Scratch is the working memory of one verification or backend signing: the
// string-to-sign buffers and the hash objects. Keep one per in-flight request (in the
// proxy's pooled per-request context) and reuse it; its zero value is ready. A Scratch
// is not safe for concurrent use.
type Scratch struct {
	sts []byte
	alt []byte
	ms  macScratch
	// names collects BackendKey.Sign's lower-cased header names.
	names nameSet
	// hx indexes the request's headers for one Verify or Sign.
	hx headerIndex
}

// StringToSign returns the string-to-sign the last Verify or BackendKey.Sign computed
// with this Scratch (for Verify, the one with the path as received), for the "Invalid
// Signature" message or a debug log. It is valid until the Scratch is used again.
func (s *Scratch) StringToSign() []byte { return s.sts }

// Verifier checks app signatures. Set its fields before first use; after that a
// Verifier is safe for concurrent use (each call brings its own Scratch).
type Verifier struct {
	// Window is how far X-Ca-Timestamp may be from the server clock, either way.
	// Zero means DefaultWindow (15 minutes).
	Window time.Duration
	// Nonces, when set, is asked to use X-Ca-Nonce once the signature has checked
	// out; a request without a nonce then fails with ErrInvalidNonce, a repeated one
	// with ErrNonceUsed, one signed before a NonceHorizon with ErrSignedBeforeRestart.
	// Nil leaves the nonce to the caller (see NonceStore).
	Nonces NonceStore
}

// Verify checks an app-signed request against the app's live secrets (one, or two
// while a secret rotates; nil entries are skipped) at time now. In order it checks:
// X-Ca-Signature-Method (ErrInvalidSignatureMethod), X-Ca-Timestamp
// (ErrInvalidTimestamp, ErrTimestampExpired), Content-MD5 when sent
// (ErrInvalidContentMD5), X-Ca-Signature (ErrInvalidSignature), then the nonce when
// v.Nonces is set (ErrInvalidNonce, ErrSignedBeforeRestart, ErrNonceUsed). It returns nil or one of those
// sentinels. The app (X-Ca-Key) is the caller's to find: see Key and
// ErrInvalidAppKey.
//
// Once the signature has been computed, sc.StringToSign holds the server's
// string-to-sign; on ErrInvalidSignature pass it to AppendInvalidSignatureMessage.
//
// Verify allocates nothing once sc's buffers have grown and takes no lock (unless
// v.Nonces does). The MAC comparison is constant-time. It parses req's query and form
// arguments, so it must not run concurrently with other users of req.
func (v *Verifier) Verify(req *fasthttp.Request, secrets []*Secret, now time.Time, sc *Scratch) error {
	sc.sts = sc.sts[:0]
	x := &sc.hx
	x.build(&req.Header)
	m, ok := ParseMethod(get(x, lowerSignatureMethod))
	if !ok {
		return ErrInvalidSignatureMethod
	}
	signedAt, err := checkTimestamp(get(x, lowerTimestamp), now, v.window())
	if err != nil {
		return err
	}
	if sum := get(x, lowerContentMD5); len(sum) > 0 && !sc.contentMD5Matches(sum, req.Body()) {
		return ErrInvalidContentMD5
	}

	path := req.URI().PathOriginal()
	sc.sts = appendStringToSign(sc.sts, req, x, path, false)
	sig := get(x, lowerSignature)
	if len(sig) == 0 {
		return ErrInvalidSignature
	}
	if !sc.ms.matches(secrets, m, sc.sts, sig) {
		// The client may have signed the decoded path (see the package doc).
		if bytes.IndexByte(path, '%') < 0 {
			return ErrInvalidSignature
		}
		sc.alt = appendStringToSign(sc.alt[:0], req, x, path, true)
		if !sc.ms.matches(secrets, m, sc.alt, sig) {
			return ErrInvalidSignature
		}
	}

	if v.Nonces != nil {
		nonce := get(x, lowerNonce)
		if len(nonce) == 0 {
			return ErrInvalidNonce
		}
		if h, ok := v.Nonces.(NonceHorizon); ok && signedAt < h.HorizonMillis() {
			return ErrSignedBeforeRestart
		}
		if !v.Nonces.Use(nonce, now) {
			return ErrNonceUsed
		}
	}
	return nil
}

func (v *Verifier) window() time.Duration {
	if v.Window > 0 {
		return v.Window
	}
	return DefaultWindow
}

// maxTimestampDigits bounds X-Ca-Timestamp: 13 digits last until the year 2286, and
// 18 keep the parse far from overflowing int64.
const maxTimestampDigits = 18

// checkTimestamp checks a millisecond timestamp against now ± window and returns it.
func checkTimestamp(b []byte, now time.Time, window time.Duration) (int64, error) {
	ms, ok := parseMillis(b)
	if !ok {
		return 0, ErrInvalidTimestamp
	}
	d := now.UnixMilli() - ms
	if d < 0 {
		d = -d
	}
	if d > window.Milliseconds() {
		return 0, ErrTimestampExpired
	}
	return ms, nil
}

// parseMillis parses a non-negative decimal integer of at most 18 digits.
func parseMillis(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > maxTimestampDigits {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// contentMD5Matches reports whether sum is base64(md5(body)).
func (sc *Scratch) contentMD5Matches(sum, body []byte) bool {
	d := md5.Sum(body)
	n := base64.StdEncoding.EncodedLen(len(d))
	base64.StdEncoding.Encode(sc.ms.b64[:n], d[:])
	// The MD5 of a body is no secret: a plain comparison leaks nothing.
	return bytes.Equal(sc.ms.b64[:n], sum)
}
