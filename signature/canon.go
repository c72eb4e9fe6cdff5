package signature

import (
	"bytes"
	"slices"
	"sync"

	"github.com/valyala/fasthttp"
)

// param is one query or form parameter, key and value decoded.
type param struct{ k, v []byte }

// inlineParams and inlineHeaders size a headerIndex's sorting space when it is first
// used. Requests with more parameters or signed headers still work: the space grows
// once and stays grown.
const (
	inlineParams  = 32
	inlineHeaders = 24
)

// AppendStringToSign appends the app string-to-sign of req, as the server computes it,
// to dst and returns the extended buffer: METHOD, Accept, Content-MD5, Content-Type and
// Date lines, the headers listed in X-Ca-Signature-Headers, then the path as received
// (escapes kept) and the sorted, decoded query and form parameters. See the package
// documentation for the rules.
//
// It allocates nothing once dst has room and its pooled index has sorted once, for up
// to 32 parameters and 24 signed headers. It parses req's query and form arguments (as
// req.URI().QueryArgs() and req.PostArgs() do), so it is not safe to call concurrently
// with anything else that uses req.
func AppendStringToSign(dst []byte, req *fasthttp.Request) []byte {
	x := indexPool.Get().(*headerIndex)
	defer indexPool.Put(x)
	x.build(&req.Header)
	return appendStringToSign(dst, req, x, req.URI().PathOriginal(), false)
}

// indexPool serves AppendStringToSign, which has no Scratch to keep an index in.
var indexPool = sync.Pool{New: func() any { return new(headerIndex) }}

// appendStringToSign is AppendStringToSign with the headers indexed and the path
// given: the raw path on the server, the path fasthttp will write on the client.
// decodePath percent-decodes it.
func appendStringToSign(dst []byte, req *fasthttp.Request, x *headerIndex, path []byte, decodePath bool) []byte {
	h := &req.Header
	dst = append(dst, h.Method()...)
	dst = append(dst, '\n')
	dst = append(dst, get(x, lowerAccept)...)
	dst = append(dst, '\n')
	dst = append(dst, get(x, lowerContentMD5)...)
	dst = append(dst, '\n')
	dst = append(dst, h.ContentType()...)
	dst = append(dst, '\n')
	dst = append(dst, get(x, lowerDate)...)
	dst = append(dst, '\n')
	dst = appendSignedHeaders(dst, x)
	return appendPathAndParameters(dst, req, x, path, decodePath)
}

// appendSignedHeaders appends "name:value\n" for each name in X-Ca-Signature-Headers,
// names as the client wrote them, looked up ignoring case.
func appendSignedHeaders(dst []byte, x *headerIndex) []byte {
	if x.names == nil {
		x.names = make([][]byte, 0, inlineHeaders)
	}
	names := splitHeaderList(x.names[:0], get(x, lowerSignatureHeaders))
	sortNames(names)
	for _, name := range names {
		dst = append(dst, name...)
		dst = append(dst, ':')
		dst = append(dst, get(x, name)...)
		dst = append(dst, '\n')
	}
	x.names = names[:0] // kept grown; like keys and vals, valid only with this request
	return dst
}

// splitHeaderList appends the names of a signed-headers list to names: split at
// commas, trimmed of spaces and tabs, empty names and the signature's own headers
// dropped. Names stay as written.
func splitHeaderList(names [][]byte, list []byte) [][]byte {
	for len(list) > 0 {
		var name []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			name, list = list[:i], list[i+1:]
		} else {
			name, list = list, nil
		}
		name = trimOWS(name)
		if len(name) == 0 ||
			len(name) == len(HeaderSignature) && equalFold(name, HeaderSignature) ||
			len(name) == len(HeaderSignatureHeaders) && equalFold(name, HeaderSignatureHeaders) {
			continue
		}
		names = append(names, name)
	}
	return names
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// appendPathAndParameters appends the path ("/" when empty) and the sorted query and
// form parameters of req, sorting them in x's space.
func appendPathAndParameters(dst []byte, req *fasthttp.Request, x *headerIndex, path []byte, decodePath bool) []byte {
	if len(path) == 0 {
		dst = append(dst, '/')
	} else if decodePath {
		dst = appendPercentDecoded(dst, path, false)
	} else {
		dst = append(dst, path...)
	}
	if x.params == nil {
		x.params = make([]param, 0, inlineParams)
	}
	ps := x.params[:0]
	// fasthttp decodes arguments the way the SDKs' query parsers do: %XX and '+' as a
	// space, malformed escapes kept as written. It skips pairs with empty key and value.
	for k, v := range req.URI().QueryArgs().All() {
		ps = append(ps, param{k, v})
	}
	if isForm(req.Header.ContentType()) {
		for k, v := range req.PostArgs().All() {
			ps = append(ps, param{k, v})
		}
	}
	x.params = ps[:0] // kept grown
	return appendParams(dst, ps)
}

// appendParams sorts ps by key, stably, and appends "?k=v&k2&k3=a,b": values of a
// repeated key joined by ',' in their order, "key" alone when the (joined) value is
// empty. It appends nothing for no parameters.
func appendParams(dst []byte, ps []param) []byte {
	if len(ps) == 0 {
		return dst
	}
	// SortStableFunc sorts in place (insertion sort and in-place merges): no allocation.
	slices.SortStableFunc(ps, compareParams)
	dst = append(dst, '?')
	for i := 0; i < len(ps); {
		j := i + 1
		valueLen := len(ps[i].v)
		for j < len(ps) && bytes.Equal(ps[j].k, ps[i].k) {
			valueLen += len(ps[j].v)
			j++
		}
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = append(dst, ps[i].k...)
		if valueLen > 0 || j-i > 1 {
			dst = append(dst, '=')
			for m := i; m < j; m++ {
				if m > i {
					dst = append(dst, ',')
				}
				dst = append(dst, ps[m].v...)
			}
		}
		i = j
	}
	return dst
}

func compareParams(a, b param) int { return bytes.Compare(a.k, b.k) }

// appendPercentDecoded appends src with %XX escapes decoded, and '+' as a space when
// plusIsSpace (query and form encoding, not paths). A malformed escape is kept as
// written, as fasthttp and Node's querystring do.
func appendPercentDecoded(dst, src []byte, plusIsSpace bool) []byte {
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '%' && i+2 >= len(src):
			// A truncated escape ends the value verbatim ('+' included): fasthttp's rule,
			// which the server side follows, so the net/http side must too.
			return append(dst, src[i:]...)
		case c == '%' && isHex(src[i+1]) && isHex(src[i+2]):
			dst = append(dst, unhex(src[i+1])<<4|unhex(src[i+2]))
			i += 2
		case c == '+' && plusIsSpace:
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
