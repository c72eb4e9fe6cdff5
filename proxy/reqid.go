package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"hash/fnv"
	"sync/atomic"
)

// requestIDLen is the length of a UUID-shaped request id: 8-4-4-4-12 hex digits.
const requestIDLen = 36

// idGen makes request ids without allocating: a fixed 64-bit prefix (32 bits from the
// node id, 32 random bits drawn at start so a restarted node never repeats an id) and a
// 64-bit atomic counter, laid out like a UUID so log tools that expect one accept it.
type idGen struct {
	prefix [19]byte // "xxxxxxxx-xxxx-xxxx-"
	n      atomic.Uint64
}

const hexDigits = "0123456789abcdef"

func newIDGen(nodeID string) *idGen {
	h := fnv.New32a()
	h.Write([]byte(nodeID))
	var r [8]byte
	_, _ = rand.Read(r[:]) // crypto/rand never fails on supported platforms
	var p [8]byte
	binary.BigEndian.PutUint32(p[:4], h.Sum32())
	copy(p[4:], r[:4])
	g := &idGen{}
	// Start the counter at a random point too: ids of two processes with the same
	// node id and an unlucky random prefix still differ.
	g.n.Store(binary.BigEndian.Uint64(r[:]) >> 16)
	hexInto(g.prefix[0:8], p[0:4])
	g.prefix[8] = '-'
	hexInto(g.prefix[9:13], p[4:6])
	g.prefix[13] = '-'
	hexInto(g.prefix[14:18], p[6:8])
	g.prefix[18] = '-'
	return g
}

func hexInto(dst []byte, src []byte) {
	for i, b := range src {
		dst[2*i] = hexDigits[b>>4]
		dst[2*i+1] = hexDigits[b&0xf]
	}
}

// next writes a fresh id into dst. Safe for concurrent use.
func (g *idGen) next(dst *[requestIDLen]byte) {
	v := g.n.Add(1)
	copy(dst[:19], g.prefix[:])
	// 16 hex digits of v as xxxx-xxxxxxxxxxxx.
	var d [16]byte
	for i := 15; i >= 0; i-- {
		d[i] = hexDigits[v&0xf]
		v >>= 4
	}
	copy(dst[19:23], d[0:4])
	dst[23] = '-'
	copy(dst[24:36], d[4:16])
}
