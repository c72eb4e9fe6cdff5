package param

import "strings"

// Kind classifies why Apply refused a request; each kind answers 400.
type Kind uint8

// The kinds of Error.
const (
	// KindMissing: a required parameter is absent.
	KindMissing Kind = iota + 1
	// KindInvalid: a parameter's value breaks a rule of its declaration.
	KindInvalid
	// KindInjection: a value looks like SQL injection or cross-site scripting
	// (the API asked for guard: injection).
	KindInjection
	// KindBody: the body fails the API's JSON Schema, is not JSON, or is empty, or a
	// form parameter cannot be added to a body that is not a form.
	KindBody
)

// String names the kind for logs and metrics labels.
func (k Kind) String() string {
	switch k {
	case KindMissing:
		return "missing"
	case KindInvalid:
		return "invalid"
	case KindInjection:
		return "injection"
	case KindBody:
		return "body"
	}
	return "unknown"
}

// Error is why a request was refused: which parameter broke which rule. Errors about
// declared parameters are built once by Compile and shared by every request; treat
// them as read-only.
type Error struct {
	Kind Kind
	// Param is the frontend parameter's name; empty for KindBody.
	Param string
	// Rule is the broken rule as the declaration writes it ("max 100", "type int",
	// "regex ^[a-z]+$", "sql injection"); empty for KindMissing.
	Rule string
}

// AppendMessage appends the client-facing message to dst without allocating (beyond
// growing dst): "Required Parameter Missing: a", "Invalid Parameter: a (max 100)",
// "Invalid Parameter: q (sql injection)", "Invalid Request Body (at '/qty': ...)".
func (e *Error) AppendMessage(dst []byte) []byte {
	switch e.Kind {
	case KindMissing:
		dst = append(dst, "Required Parameter Missing: "...)
		return append(dst, e.Param...)
	case KindBody:
		dst = append(dst, "Invalid Request Body"...)
	default:
		dst = append(dst, "Invalid Parameter: "...)
		dst = append(dst, e.Param...)
	}
	if e.Rule != "" {
		dst = append(dst, " ("...)
		dst = append(dst, e.Rule...)
		dst = append(dst, ')')
	}
	return dst
}

// Error returns the message AppendMessage writes.
func (e *Error) Error() string { return string(e.AppendMessage(nil)) }

// oneLine keeps a message fit for an HTTP header value (X-Ca-Error-Message): the
// parameter names and rules come from a provider's file and the schema library's
// text, and a control character in a header would break the response.
func oneLine(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func newError(k Kind, param, rule string) *Error {
	return &Error{Kind: k, Param: oneLine(param), Rule: oneLine(rule)}
}
