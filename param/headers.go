package param

import (
	"cmp"
	"slices"
	"strings"
)

// standardHeaders are the exact header names (lower-case) that an API which declares
// parameters still forwards without declaring them: the ones HTTP itself, browsers,
// proxies and tracing put on a request, which a backend expects to see and a provider
// would not think to declare. Hop-by-hop headers among them (Connection, TE, Upgrade…)
// are the proxy's to strip, not ours. Proxy-Authorization is left out on purpose: it
// authenticates the client to the gateway and must not reach the backend.
var standardHeaders = map[string]struct{}{
	"accept":            {},
	"authorization":     {},
	"cache-control":     {},
	"connection":        {},
	"cookie":            {},
	"date":              {},
	"dnt":               {},
	"expect":            {},
	"forwarded":         {},
	"from":              {},
	"host":              {},
	"keep-alive":        {},
	"max-forwards":      {},
	"origin":            {},
	"pragma":            {},
	"range":             {},
	"referer":           {},
	"te":                {},
	"trailer":           {},
	"transfer-encoding": {},
	"upgrade":           {},
	"user-agent":        {},
	"via":               {},
	"warning":           {},
	"x-real-ip":         {},
	"x-request-id":      {},
	"traceparent":       {},
	"tracestate":        {},
	"baggage":           {},
}

// standardPrefixes are header families that pass whole: content negotiation
// (Accept-*), the body's description (Content-*, incl. Content-MD5 that signatures
// cover), conditionals (If-*), the client's address as proxies saw it
// (X-Forwarded-*), the gateway protocol's own headers (X-Ca-*: key, signature,
// nonce, stage), browser fetch metadata (Sec-*) and CORS preflight requests.
var standardPrefixes = [...]string{
	"accept-", "content-", "if-", "x-forwarded-", "x-ca-", "sec-", "access-control-request-",
}

// standardByFirst lists, by a name's first byte (lower-cased), the standard names and
// prefixes it may match: StandardHeader runs for every header of every request to an
// API with declared parameters, and a handful of length checks and byte comparisons
// cost less than lower-casing the name and hashing it for the map.
//
// Within a byte's list the exact names come first (a length check turns most away),
// then the prefixes, shortest first: X-Ca-* reaches "x-ca-" before it reads
// "x-forwarded-", and the order is the same in every process (the map's is not).
var standardByFirst = func() (t [256][]standardName) {
	for name := range standardHeaders {
		t[name[0]] = append(t[name[0]], standardName{name: name})
	}
	for _, p := range standardPrefixes {
		t[p[0]] = append(t[p[0]], standardName{name: p, prefix: true})
	}
	for _, list := range t {
		slices.SortFunc(list, func(a, b standardName) int {
			if a.prefix != b.prefix {
				if a.prefix {
					return 1
				}
				return -1
			}
			return cmp.Or(cmp.Compare(len(a.name), len(b.name)), strings.Compare(a.name, b.name))
		})
	}
	return t
}()

type standardName struct {
	name   string // lower-case
	prefix bool   // a family: names longer than name that start with it
}

// StandardHeader reports whether a header (any case) passes to the backend of an API
// that declares parameters without declaring it. It does not allocate.
func StandardHeader(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range standardByFirst[lower(name[0])] {
		if len(name) == len(c.name) && !c.prefix || len(name) > len(c.name) && c.prefix {
			if bytesEqualFold(name[:len(c.name)], c.name) {
				return true
			}
		}
	}
	return false
}
