package signature

import "github.com/valyala/fasthttp"

// headerIndex is a request's headers read in one pass. A string-to-sign reads a dozen
// headers; fasthttp's Peek copies, validates and normalizes the name on every call and
// then scans the headers again, which made the lookups the costliest part of checking
// and making a signature. The index keeps fasthttp's own slices and compares names
// ignoring ASCII case, as fasthttp's normalized lookup does.
//
// Keys and values point into the request's header buffers: an index is valid until
// the headers change.
//
// params and names are the canonicalizer's sorting space, kept here rather than as
// arrays on the stack, which were zeroed whole on every call (2 KiB per verified
// request, 1.5 more per backend signature).
type headerIndex struct {
	keys, vals [][]byte
	params     []param
	names      [][]byte
}

// build indexes every header of h, the ones fasthttp keeps apart (Host,
// Content-Type, User-Agent, Content-Length, Cookie) included.
func (x *headerIndex) build(h *fasthttp.RequestHeader) {
	x.keys, x.vals = x.keys[:0], x.vals[:0]
	for k, v := range h.All() {
		x.keys = append(x.keys, k)
		x.vals = append(x.vals, v)
	}
}

// get returns the value of the first header named name, ignoring ASCII case, or nil.
func get[S ~string | ~[]byte](x *headerIndex, name S) []byte {
	for i, k := range x.keys {
		if len(k) == len(name) && equalFold(k, name) {
			return x.vals[i]
		}
	}
	return nil
}

// equalFold reports whether a and b are equal ignoring ASCII case; len(a) == len(b).
func equalFold[S ~string | ~[]byte](a []byte, b S) bool {
	for i := range len(a) {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte { return lowerTable[c] }

// lowerTable maps each byte to itself, ASCII capitals to small letters: a table
// lookup, where the comparison and branch per byte showed in the profile.
var lowerTable = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = byte(c + 'a' - 'A')
	}
	return t
}()
