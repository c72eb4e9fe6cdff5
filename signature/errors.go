package signature

// Error is a refused signature check. Its message is the text Alibaba Cloud API
// Gateway sends in X-Ca-Error-Message for the same refusal, so a caller can send
// Error() as is; the proxy's error table maps each sentinel to a status and a code.
// Errors are the package's sentinel values; compare with == or errors.Is.
type Error struct {
	msg string
}

// Error returns the Alibaba message, such as "Timestamp Expired".
func (e *Error) Error() string { return e.msg }

// The refusals. Every Verify error is one of these, returned as is (never wrapped), so
// returning one allocates nothing.
var (
	// ErrInvalidAppKey is for the caller: X-Ca-Key is missing or names no enabled app.
	// This package never returns it, since it knows no apps.
	ErrInvalidAppKey = &Error{"Invalid AppKey"}
	// ErrInvalidSignature means X-Ca-Signature is missing or matches none of the app's
	// secrets. Answer it with AppendInvalidSignatureMessage, which shows the server's
	// string-to-sign.
	ErrInvalidSignature = &Error{"Invalid Signature"}
	// ErrInvalidSignatureMethod means X-Ca-Signature-Method is neither HmacSHA256 nor
	// HmacSHA1.
	ErrInvalidSignatureMethod = &Error{"Invalid Signature Method"}
	// ErrInvalidTimestamp means X-Ca-Timestamp is missing or not a number of
	// milliseconds since the Unix epoch.
	ErrInvalidTimestamp = &Error{"Invalid Timestamp"}
	// ErrTimestampExpired means X-Ca-Timestamp is further from the server's clock than
	// the verifier's window, in either direction.
	ErrTimestampExpired = &Error{"Timestamp Expired"}
	// ErrInvalidContentMD5 means a Content-MD5 header was sent and is not the base64 MD5
	// of the body received.
	ErrInvalidContentMD5 = &Error{"Invalid Content-MD5"}
	// ErrInvalidNonce means a nonce check was asked for and X-Ca-Nonce is missing.
	ErrInvalidNonce = &Error{"Invalid Nonce"}
	// ErrNonceUsed means X-Ca-Nonce was already used within the window: a replay.
	ErrNonceUsed = &Error{"Nonce Used"}
	// ErrSignedBeforeRestart means X-Ca-Timestamp is before the horizon of a nonce
	// store that lost the nonces used before it (see NonceHorizon): the call may be a
	// replay the store cannot recognise. A call signed again passes.
	ErrSignedBeforeRestart = &Error{"Signed Before Node Restart"}

	// ErrMissingProxySignature means a backend request carries no
	// X-Ca-Proxy-Signature or no X-Ca-Proxy-Signature-Secret-Key.
	ErrMissingProxySignature = &Error{"Missing Proxy Signature"}
	// ErrUnknownBackendKey means X-Ca-Proxy-Signature-Secret-Key names a key the
	// backend does not know.
	ErrUnknownBackendKey = &Error{"Unknown Proxy Signature Key"}
	// ErrInvalidProxySignature means X-Ca-Proxy-Signature does not match the request.
	ErrInvalidProxySignature = &Error{"Invalid Proxy Signature"}
)

// maxMessageStringToSign caps how much of the string-to-sign goes into an error
// header: clients refuse response headers beyond some 8 to 16 KiB, and a client needs
// the start of the string far more than its tail.
const maxMessageStringToSign = 4096

// AppendInvalidSignatureMessage appends Alibaba's X-Ca-Error-Message for a bad
// signature to dst: "Invalid Signature, Server StringToSign:`...`", the server's
// string-to-sign (Scratch.StringToSign) with each newline written as '#'. Other
// control bytes, which only decoded parameter values can hold and which must not
// reach a header, are written as '?'. A string-to-sign longer than 4 KiB is cut and
// ends in "...". It allocates only when dst must grow.
func AppendInvalidSignatureMessage(dst, stringToSign []byte) []byte {
	dst = append(dst, "Invalid Signature, Server StringToSign:`"...)
	s := stringToSign
	cut := len(s) > maxMessageStringToSign
	if cut {
		s = s[:maxMessageStringToSign]
	}
	for _, c := range s {
		switch {
		case c == '\n':
			c = '#'
		case c < 0x20 || c == 0x7f:
			c = '?'
		}
		dst = append(dst, c)
	}
	if cut {
		dst = append(dst, "..."...)
	}
	return append(dst, '`')
}
