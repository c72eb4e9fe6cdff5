package signature

import (
	"bytes"
	"slices"
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
	start := len(ns.buf)
	ns.buf = append(ns.buf, name...)
	low := ns.buf[start:]
	for i, c := range low {
		low[i] = lowerTable[c]
	}
	ns.ends = append(ns.ends, len(ns.buf))
}

// addXCa adds every indexed header named X-Ca-*. It reports whether none of them is
// one of the backend signature's own headers, which BackendKey.Sign replaces.
func (ns *nameSet) addXCa(x *headerIndex) (noProxySignature bool) {
	noProxySignature = true
	for _, name := range x.keys {
		if !hasPrefixFold(name, "x-ca-") {
			continue
		}
		if isProxySignatureHeader(name) {
			noProxySignature = false
		}
		ns.add(name)
	}
	return noProxySignature
}

// isProxySignatureHeader reports the backend signature's headers, in any case.
func isProxySignatureHeader(name []byte) bool {
	return len(name) == len(HeaderProxySignature) && equalFold(name, HeaderProxySignature) ||
		len(name) == len(HeaderProxySignatureHeaders) && equalFold(name, HeaderProxySignatureHeaders) ||
		len(name) == len(HeaderProxySignatureSecretKey) && equalFold(name, HeaderProxySignatureSecretKey)
}

// sorted cuts the names, sorts and dedups them, and returns them; ns.list then holds
// them joined by commas.
func (ns *nameSet) sorted() [][]byte {
	start := 0
	for _, end := range ns.ends {
		ns.names = append(ns.names, ns.buf[start:end])
		start = end
	}
	sortNames(ns.names)
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
