package signature

import (
	"bytes"
	"slices"

	"github.com/valyala/fasthttp"
)

// nameSet collects lower-cased header names without allocating once grown: the bytes
// go into one buffer, and the slices into it are cut only after the last append, so a
// growing buffer never leaves a slice pointing into its old copy.
type nameSet struct {
	buf   []byte
	ends  []int
	names [][]byte
	list  []byte
}

func (ns *nameSet) reset() {
	ns.buf, ns.ends, ns.names = ns.buf[:0], ns.ends[:0], ns.names[:0]
}

func (ns *nameSet) add(name []byte) {
	for _, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		ns.buf = append(ns.buf, c)
	}
	ns.ends = append(ns.ends, len(ns.buf))
}

// addXCa adds every header of h named X-Ca-*, but for the excluded names.
func (ns *nameSet) addXCa(h *fasthttp.RequestHeader, exclude ...string) {
	for k := range h.All() {
		if !hasPrefixFold(k, "x-ca-") {
			continue
		}
		skip := false
		for _, e := range exclude {
			skip = skip || bytes.EqualFold(k, []byte(e))
		}
		if !skip {
			ns.add(k)
		}
	}
}

// sorted cuts the names, sorts and dedups them, and returns them; ns.list then holds
// them joined by commas.
func (ns *nameSet) sorted() [][]byte {
	start := 0
	for _, end := range ns.ends {
		ns.names = append(ns.names, ns.buf[start:end])
		start = end
	}
	slices.SortFunc(ns.names, bytes.Compare)
	ns.names = slices.CompactFunc(ns.names, bytes.Equal)
	ns.list = ns.list[:0]
	for i, n := range ns.names {
		if i > 0 {
			ns.list = append(ns.list, ',')
		}
		ns.list = append(ns.list, n...)
	}
	return ns.names
}
