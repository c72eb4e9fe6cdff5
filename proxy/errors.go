package proxy

import (
	"strconv"
)

// ErrorCode is one row of the gateway's error table: the HTTP status, the six-character
// code sent in X-Ca-Error-Code and the message sent in X-Ca-Error-Message.
//
// Codes follow Alibaba Cloud API Gateway's style (DESIGN.md "Errors"): the class letter
// (A auth, T throttling, I invalid request, D backend, B quota and billing, X internal),
// the status, and two letters. Where Alibaba has a message or code for the same case we
// use it, so clients written against Alibaba recognise our answers.
//
// An ErrorCode is immutable and safe for concurrent use; it implements error so later
// pipeline stages can return one.
type ErrorCode struct {
	Status  int    // HTTP status
	Code    string // X-Ca-Error-Code, six characters
	Message string // X-Ca-Error-Message; a detail may follow after ": "
	// Use says when the gateway answers with it (for the README table).
	Use string

	// Precomputed so an error answer costs no formatting on the hot path.
	code      []byte
	message   []byte
	jsonStart []byte // {"code":"…","message":"…  (message JSON-escaped, quote still open)
}

// Error returns "CODE Message", so an ErrorCode can travel as an error.
func (e *ErrorCode) Error() string { return e.Code + " " + e.Message }

// errorTable holds every row in the order Errors lists them.
var errorTable []*ErrorCode

func def(status int, code, message, use string) *ErrorCode {
	if len(code) != 6 || code[1:4] != strconv.Itoa(status) {
		panic("proxy: malformed error code " + code)
	}
	e := &ErrorCode{Status: status, Code: code, Message: message, Use: use}
	e.code = []byte(code)
	e.message = []byte(message)
	b := append([]byte(nil), `{"code":"`...)
	b = append(b, code...)
	b = append(b, `","message":"`...)
	b = appendJSONString(b, message)
	e.jsonStart = b
	errorTable = append(errorTable, e)
	return e
}

// The error table. It is the only place codes and messages are written: tests, the
// README generator and the docs read it through Errors.
var (
	// Routing.
	ErrDomainNotFound   = def(404, "I404DM", "Invalid Domain", "the Host names no group (by subdomain or custom domain)")
	ErrAPINotFound      = def(404, "I404NF", "API Not Found", "no API of the group matches the method and path")
	ErrStageNotDeployed = def(404, "I404SD", "API Not Deployed In Stage", "the API exists in the group but serves no version in the requested stage")
	ErrMethodNotAllowed = def(405, "I405UM", "Unsupported Method", "the path matches an API that does not accept this method")
	ErrInvalidStage     = def(400, "I400SG", "Invalid Stage", "X-Ca-Stage is not TEST, PRE or RELEASE")

	// Request limits and malformed requests (fasthttp's own errors map here).
	ErrBadRequest     = def(400, "I400RU", "Invalid Request", "the request could not be parsed as HTTP")
	ErrRequestTimeout = def(408, "I408RT", "Request Timeout", "the client did not send the whole request in time")
	ErrBodyTooLarge   = def(413, "I413RL", "Request Body Too Large", "the request body exceeds the node's body limit")
	ErrURLTooLarge    = def(413, "I413UL", "Request URL Or Headers Too Large", "the request line and headers exceed the node's header limit")

	// Auth (A).
	ErrAuthUnsupported        = def(401, "A401NS", "Auth Mode Not Supported By This Build", "the API's auth mode is none of app, appcode, jwt and anonymous; the call is refused")
	ErrInvalidAppKey          = def(400, "A400IK", "Invalid AppKey", "X-Ca-Key names no app, or the app is disabled")
	ErrInvalidAppCode         = def(400, "A400IC", "Invalid AppCode", "the APPCODE (Authorization header or AppCode query parameter) names no enabled app")
	ErrInvalidSignature       = def(403, "A403IS", "Invalid Signature", "X-Ca-Signature does not match; the message carries the server's StringToSign")
	ErrInvalidSignatureMethod = def(400, "A400SM", "Invalid Signature Method", "X-Ca-Signature-Method is neither HmacSHA256 nor HmacSHA1")
	ErrTimestampExpired       = def(400, "A400TE", "Timestamp Expired", "X-Ca-Timestamp is more than 15 minutes away from the node's clock")
	ErrInvalidTimestamp       = def(400, "A400IT", "Invalid Timestamp", "X-Ca-Timestamp is missing or not milliseconds since the epoch")
	ErrNonceUsed              = def(400, "A400NU", "Nonce Used", "X-Ca-Nonce was already used within 15 minutes")
	ErrSignedBeforeRestart    = def(400, "A400SR", "Signed Before Node Restart", "X-Ca-Timestamp is before the node's restart after a crash, which lost the nonces used before it; sign the call again")
	ErrInvalidNonce           = def(400, "A400IN", "Invalid Nonce", "X-Ca-Nonce is missing or too long")
	ErrInvalidMD5             = def(400, "A400MD", "Invalid Content-MD5", "Content-MD5 does not match the body")
	ErrInvalidToken           = def(401, "A401IT", "Invalid Token", "the JWT is missing, malformed, expired, not yet valid, for another issuer or audience, replayed, or not signed by a configured key; the message says which")
	ErrUnauthorized           = def(403, "A403NG", "Unauthorized", "the app holds no grant for this API in this stage")
	ErrGrantExpired           = def(403, "A403EX", "Expiry of Authorization", "the app's grant for this API has expired")
	ErrIPDenied               = def(403, "A403IP", "Access Denied By IP Control", "the client address is refused by the API's IP policy")

	// Throttling (T).
	ErrThrottledAPI    = def(429, "T429AR", "Throttled by API Flow Control", "the API's quota for the window is used up")
	ErrThrottledApp    = def(429, "T429AP", "Throttled by APP Flow Control", "the app's quota for the window is used up")
	ErrThrottledDomain = def(429, "T429DM", "Throttled by DOMAIN Flow Control", "the group's default subdomain has used its calls for the day (node flag --subdomain-daily-limit); custom domains are not capped")
	ErrThrottledUser   = def(429, "T429UR", "Throttled by USER Flow Control", "the app owner's quota for the window is used up")

	// Parameters (I).
	ErrInvalidParam = def(400, "I400IP", "Invalid Parameter", "a parameter fails its type or checks; the message names it")
	ErrMissingParam = def(400, "I400MP", "Required Parameter Missing", "a required parameter is absent; the message names it")
	ErrInvalidBody  = def(400, "I400BD", "Invalid Request Body", "the body fails the API's JSON Schema, is not JSON, or cannot carry the form parameters; the message says why")
	ErrInjection    = def(400, "I400IJ", "Invalid Parameter", "a parameter value looks like SQL injection or XSS (guard: injection); the message names it")

	// Backend (D).
	ErrBackendTimeout     = def(504, "D504TO", "Backend Service Timeout", "the backend did not answer within the API's timeout")
	ErrBackendUnreachable = def(502, "D502CO", "Failed To Invoke Backend Service", "the backend refused the connection, reset it or spoke bad HTTP (response headers over 16 KiB included)")
	ErrBackendBusy        = def(503, "D503CL", "Backend Connection Limit Reached", "every connection to the backend is busy")
	ErrBackendTooLarge    = def(502, "D502RL", "Backend Response Too Large", "the backend's response body exceeds the node's response limit")

	// Internal (X).
	ErrInternal = def(500, "X500IE", "Internal Error", "the gateway failed; the access log has the cause")
)

// Errors returns the error table in a stable order. The rows are shared and must not be
// modified. Safe for concurrent use.
func Errors() []*ErrorCode {
	return append([]*ErrorCode(nil), errorTable...)
}

// appendJSONString appends s with JSON string escaping (no surrounding quotes). It never
// allocates beyond growing dst.
func appendJSONString[S string | []byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20 || c == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// appendHeaderSafe appends s for use in a header value: control characters (which could
// split the header) become '#', as Alibaba writes newlines of a StringToSign.
func appendHeaderSafe[S string | []byte](dst []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			c = '#'
		}
		dst = append(dst, c)
	}
	return dst
}
