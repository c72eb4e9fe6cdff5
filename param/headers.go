package param

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

// StandardHeader reports whether a header (any case) passes to the backend of an API
// that declares parameters without declaring it. It does not allocate.
//
// The prefixes are tried first: they are a few byte comparisons, and on a signed call
// most headers are X-Ca-*, which the map would miss.
func StandardHeader(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	first := lower(name[0])
	for _, p := range standardPrefixes {
		if p[0] == first && len(name) > len(p) && bytesEqualFold(name[:len(p)], p) {
			return true
		}
	}
	var buf [32]byte
	if len(name) > len(buf) {
		return false
	}
	low := buf[:len(name)]
	for i, c := range name {
		low[i] = lower(c)
	}
	_, ok := standardHeaders[string(low)]
	return ok
}
