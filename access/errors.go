package access

// Error is a refused access check. Its message is written in the style of Alibaba
// Cloud API Gateway's X-Ca-Error-Message, so a caller can send Error() as is; the
// proxy's error table maps each sentinel to a status and a six-character code.
// Errors are the package's sentinel values, returned as is (never wrapped): compare
// with == or errors.Is.
type Error struct {
	msg string
}

// Error returns the message, such as "Token Expired".
func (e *Error) Error() string { return e.msg }

// The refusals of JWTVerifier.Verify. The token's content never goes into a message:
// a refusal tells the client what is wrong, not what the gateway saw.
var (
	// ErrMissingToken means the request carries no token where the API reads it.
	ErrMissingToken = &Error{"Missing Token"}
	// ErrInvalidToken means the token is malformed, signed with an algorithm none of
	// the API's keys is for, names a kid no key has, fails its signature, or lacks a
	// claim the check needs (jti and exp when the API makes tokens single use).
	ErrInvalidToken = &Error{"Invalid Token"}
	// ErrTokenExpired means the token's exp is past (beyond the verifier's leeway).
	ErrTokenExpired = &Error{"Token Expired"}
	// ErrTokenNotYetValid means the token's nbf is still ahead (beyond the leeway).
	ErrTokenNotYetValid = &Error{"Token Not Yet Valid"}
	// ErrTokenIssuer means the API names an issuer and the token's iss is another one
	// or is missing.
	ErrTokenIssuer = &Error{"Invalid Token Issuer"}
	// ErrTokenAudience means the API names an audience and the token's aud does not
	// hold it.
	ErrTokenAudience = &Error{"Invalid Token Audience"}
	// ErrTokenReplayed means the API makes tokens single use and this token's jti was
	// already used.
	ErrTokenReplayed = &Error{"Token Replayed"}
	// ErrNoReplayStore means the API makes tokens single use but the verifier was given
	// no ReplayStore. It is the gateway's fault, not the client's: answer it as an
	// internal error. Every token is refused rather than let replays through.
	ErrNoReplayStore = &Error{"Token Replay Store Not Configured"}
)
