package signature

import "github.com/valyala/fasthttp"

// headerIndex is a request's headers read in one pass, names lower-cased. A
// string-to-sign reads a dozen headers; fasthttp's Peek copies, validates and
// normalizes the name on every call and then scans the headers again, which made the
// lookups the costliest part of checking and making a signature.
//
// Values point into the request's header buffers: an index is valid until the
// headers change.
type headerIndex struct {
	names []byte // lower-cased names, back to back
	ends  []int  // ends[i] is where name i ends in names
	vals  [][]byte
}

// build indexes every header of h, the ones fasthttp keeps apart (Host,
// Content-Type, User-Agent, Content-Length, Cookie) included.
func (x *headerIndex) build(h *fasthttp.RequestHeader) {
	x.names, x.ends, x.vals = x.names[:0], x.ends[:0], x.vals[:0]
	for k, v := range h.All() {
		for _, c := range k {
			x.names = append(x.names, lowerASCII(c))
		}
		x.ends = append(x.ends, len(x.names))
		x.vals = append(x.vals, v)
	}
}

// get returns the value of the first header named name, or nil; name is matched
// ignoring ASCII case, as fasthttp's normalized lookup does.
func get[S ~string | ~[]byte](x *headerIndex, name S) []byte {
	start := 0
	for i, end := range x.ends {
		if end-start == len(name) && equalLower(x.names[start:end], name) {
			return x.vals[i]
		}
		start = end
	}
	return nil
}

// equalLower reports whether lower equals name lower-cased; len(lower) == len(name).
func equalLower[S ~string | ~[]byte](lower []byte, name S) bool {
	for i := range len(lower) {
		if lower[i] != lowerASCII(name[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
