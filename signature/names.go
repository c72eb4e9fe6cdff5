package signature

import (
	"bytes"
	"slices"
)

// nameSet collects the lower-cased names of the headers a signature covers, with
// their values, without allocating once grown. Names are copied into one buffer and
// referred to by offsets until sorted cuts them, so a growing buffer never leaves a
// slice pointing into its old copy; entries are small, so the sort moves little.
type nameSet struct {
	buf   []byte
	ents  []nameEnt
	names [][]byte // after sorted: the names, sorted and deduplicated
	vals  [][]byte // after sorted: vals[i] is the value of names[i]
	list  []byte   // after sorted: the names joined by commas (the last sort's)

	// The last sort: its input (buf and ents as added) and its output (the entries
	// kept, in order). A client sends its headers the same way on every call, so the
	// next request on this Scratch usually adds the very same names at the same
	// header positions, and takes the order from here instead of sorting again.
	memoBuf []byte
	memoIn  []nameEnt
	memoOut []nameEnt
}

// nameEnt is a name in buf[start:end], and the index in the headerIndex of the
// header it came from, or -1 when sorted must look the value up.
type nameEnt struct {
	start, end, hdr int32
}

func (ns *nameSet) reset() {
	ns.buf, ns.ents = ns.buf[:0], ns.ents[:0]
	ns.names, ns.vals = ns.names[:0], ns.vals[:0]
}

// add adds a name that sorted looks up in the index.
func (ns *nameSet) add(name []byte) { ns.addEnt(name, -1) }

func (ns *nameSet) addEnt(name []byte, hdr int) {
	start := len(ns.buf)
	ns.buf = append(ns.buf, name...)
	low := ns.buf[start:]
	for i, c := range low {
		low[i] = lowerTable[c]
	}
	ns.ents = append(ns.ents, nameEnt{start: int32(start), end: int32(len(ns.buf)), hdr: int32(hdr)})
}

// addXCa adds every indexed header named X-Ca-*. It reports whether none of them is
// one of the backend signature's own headers, which BackendKey.Sign replaces.
func (ns *nameSet) addXCa(x *headerIndex) (noProxySignature bool) {
	noProxySignature = true
	for i, name := range x.keys {
		if !hasPrefixFold(name, "x-ca-") {
			continue
		}
		if isProxySignatureHeader(name) {
			noProxySignature = false
		}
		ns.addEnt(name, i)
	}
	return noProxySignature
}

// isProxySignatureHeader reports the backend signature's headers, in any case.
func isProxySignatureHeader(name []byte) bool {
	return len(name) == len(HeaderProxySignature) && equalFold(name, HeaderProxySignature) ||
		len(name) == len(HeaderProxySignatureHeaders) && equalFold(name, HeaderProxySignatureHeaders) ||
		len(name) == len(HeaderProxySignatureSecretKey) && equalFold(name, HeaderProxySignatureSecretKey)
}

// sorted sorts the names and drops repeats, keeping the first of equal names (so a
// header sent twice signs its first value, as get reads it). It fills ns.names,
// ns.vals (values from x) and ns.list, and returns ns.names.
func (ns *nameSet) sorted(x *headerIndex) [][]byte {
	if !ns.sameAsLast() {
		ns.sortAndRemember()
	}
	for _, e := range ns.memoOut {
		n := ns.buf[e.start:e.end]
		var v []byte
		if e.hdr >= 0 {
			v = x.vals[e.hdr]
		} else {
			v = get(x, n)
		}
		ns.names = append(ns.names, n)
		ns.vals = append(ns.vals, v)
	}
	return ns.names
}

// sameAsLast reports whether the names were added as in the last sort: the same
// bytes at the same header positions, so its order holds.
func (ns *nameSet) sameAsLast() bool {
	return bytes.Equal(ns.buf, ns.memoBuf) && slices.Equal(ns.ents, ns.memoIn)
}

// sortAndRemember sorts the entries (stably, by name), drops repeats and keeps the
// input and the result for sameAsLast.
func (ns *nameSet) sortAndRemember() {
	ns.memoBuf = append(ns.memoBuf[:0], ns.buf...)
	ns.memoIn = append(ns.memoIn[:0], ns.ents...)
	buf, ents := ns.buf, ns.ents
	name := func(e nameEnt) []byte { return buf[e.start:e.end] }
	// Insertion sort, stable: a dozen names, often nearly in order.
	for i := 1; i < len(ents); i++ {
		for j := i; j > 0 && bytes.Compare(name(ents[j]), name(ents[j-1])) < 0; j-- {
			ents[j], ents[j-1] = ents[j-1], ents[j]
		}
	}
	ns.memoOut, ns.list = ns.memoOut[:0], ns.list[:0]
	for i, e := range ents {
		n := name(e)
		if i > 0 && bytes.Equal(n, name(ents[i-1])) {
			continue
		}
		if len(ns.memoOut) > 0 {
			ns.list = append(ns.list, ',')
		}
		ns.list = append(ns.list, n...)
		ns.memoOut = append(ns.memoOut, e)
	}
}

// sortNames sorts a dozen or so header names by insertion: fewer compares than the
// generic sort's calls through a func value cost, and none for a list already sorted,
// as the SDKs send X-Ca-Signature-Headers.
func sortNames(names [][]byte) {
	for i := 1; i < len(names); i++ {
		for j := i; j > 0 && bytes.Compare(names[j], names[j-1]) < 0; j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
}
