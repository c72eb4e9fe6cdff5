package signature

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"
)

// Header names of the app and backend signatures.
const (
	// HeaderKey carries the app's AppKey. The caller looks the app up by it.
	HeaderKey = "X-Ca-Key"
	// HeaderSignature carries base64(HMAC(AppSecret, StringToSign)).
	HeaderSignature = "X-Ca-Signature"
	// HeaderSignatureHeaders lists the signed headers, comma-separated.
	HeaderSignatureHeaders = "X-Ca-Signature-Headers"
	// HeaderSignatureMethod is HmacSHA256 (the default) or HmacSHA1.
	HeaderSignatureMethod = "X-Ca-Signature-Method"
	// HeaderTimestamp is the client's time in milliseconds since the Unix epoch.
	HeaderTimestamp = "X-Ca-Timestamp"
	// HeaderNonce is a value the client uses once (a UUID), against replays.
	HeaderNonce = "X-Ca-Nonce"
	// HeaderStage selects the stage (TEST, PRE, RELEASE); it is routing's, not ours,
	// but clients sign it.
	HeaderStage = "X-Ca-Stage"
	// HeaderContentMD5 is base64(md5(body)), checked against the body when sent.
	HeaderContentMD5 = "Content-MD5"
	// HeaderAccept, HeaderDate: the other standard headers of the string-to-sign.
	HeaderAccept = "Accept"
	HeaderDate   = "Date"

	// HeaderProxySignature carries the backend signature.
	HeaderProxySignature = "X-Ca-Proxy-Signature"
	// HeaderProxySignatureHeaders lists the headers the backend signature covers,
	// lower-cased, comma-separated.
	HeaderProxySignatureHeaders = "X-Ca-Proxy-Signature-Headers"
	// HeaderProxySignatureSecretKey names the backend key (its key, not its secret)
	// the backend signature was made with.
	HeaderProxySignatureSecretKey = "X-Ca-Proxy-Signature-Secret-Key"
)

// The lower-cased names the string-to-sign looks up in a headerIndex.
const (
	lowerAccept           = "accept"
	lowerContentMD5       = "content-md5"
	lowerDate             = "date"
	lowerSignatureHeaders = "x-ca-signature-headers"
	lowerSignature        = "x-ca-signature"
	lowerSignatureMethod  = "x-ca-signature-method"
	lowerTimestamp        = "x-ca-timestamp"
	lowerNonce            = "x-ca-nonce"
)

// DefaultWindow is how far X-Ca-Timestamp may be from the server's clock, and how
// long a nonce is remembered, unless configured otherwise.
const DefaultWindow = 15 * time.Minute

// Method is an HMAC algorithm a client may sign with.
type Method uint8

// The signature methods. The zero Method is HmacSHA256, the default.
const (
	HmacSHA256 Method = iota
	HmacSHA1
	numMethods
)

var methodNames = [numMethods]string{"HmacSHA256", "HmacSHA1"}

// String returns the method's name as X-Ca-Signature-Method spells it.
func (m Method) String() string {
	if m < numMethods {
		return methodNames[m]
	}
	return "Method(?)"
}

// ParseMethod reads an X-Ca-Signature-Method value, in any case. Empty means
// HmacSHA256. It reports false for any other value.
func ParseMethod(b []byte) (Method, bool) {
	if len(b) == 0 {
		return HmacSHA256, true
	}
	for i, name := range methodNames {
		if bytes.EqualFold(b, []byte(name)) {
			return Method(i), true
		}
	}
	return HmacSHA256, false
}

// Key returns the request's X-Ca-Key, or nil. The slice is valid while req is.
func Key(req *fasthttp.Request) []byte { return req.Header.Peek(HeaderKey) }

// Nonce returns the request's X-Ca-Nonce, or nil: the value a NonceStore is given.
// The slice is valid while req is; a store that keeps it must copy it.
func Nonce(req *fasthttp.Request) []byte { return req.Header.Peek(HeaderNonce) }

// formType is the content type whose body parameters are signed.
const formType = "application/x-www-form-urlencoded"

// isForm reports whether a Content-Type value names a form body. The match is
// case-insensitive on the prefix, as fasthttp's PostArgs decides it, so that what we
// sign and what fasthttp parses as the form always agree.
func isForm(contentType []byte) bool {
	return len(contentType) >= len(formType) &&
		bytes.EqualFold(contentType[:len(formType)], []byte(formType))
}
