package signature

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"encoding/base64"
	"hash"
)

// Secret is an app secret or backend secret compiled for signing: for each Method, the
// hash state after absorbing the key XOR ipad and the key XOR opad (RFC 2104). An HMAC
// then costs two state restores and no allocation, instead of a new keyed hash per
// request; crypto/hmac does the same internally, but only per hmac object.
//
// A Secret is immutable after NewSecret and safe for concurrent use. It does not keep
// the secret itself, and prints as "[redacted]": its states are as good as the key to a
// forger, so it must not reach a log either.
type Secret struct {
	states [numMethods]macState
}

type macState struct{ inner, outer []byte }

// stateHash is a hash whose state can be restored, as crypto's SHA hashes are.
type stateHash interface {
	hash.Hash
	encoding.BinaryUnmarshaler
}

var newHash = [numMethods]func() hash.Hash{sha256.New, sha1.New}

// NewSecret compiles secret for both methods. Call it once per secret when the
// configuration changes, not per request.
func NewSecret(secret string) *Secret {
	s := new(Secret)
	for m := range s.states {
		h := newHash[m]()
		key := []byte(secret)
		if len(key) > h.BlockSize() {
			h.Write(key)
			key = h.Sum(nil)
			h.Reset()
		}
		pad := make([]byte, h.BlockSize())
		s.states[m].inner = padState(h, pad, key, 0x36)
		s.states[m].outer = padState(h, pad, key, 0x5c)
	}
	return s
}

func padState(h hash.Hash, pad, key []byte, x byte) []byte {
	clear(pad)
	copy(pad, key)
	for i := range pad {
		pad[i] ^= x
	}
	h.Reset()
	h.Write(pad)
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		// crypto's SHA-1 and SHA-256 always marshal; this cannot happen.
		panic("signature: hash state not marshalable: " + err.Error())
	}
	return st
}

// String hides the secret.
func (*Secret) String() string { return "[redacted]" }

// GoString hides the secret from %#v.
func (*Secret) GoString() string { return "[redacted]" }

// macScratch holds the hash objects and digests of one HMAC computation at a time. It
// lives inside a Scratch (on the heap), so the interface calls below leak nothing that
// would have to be allocated.
type macScratch struct {
	h     [numMethods]stateHash
	inner [sha256.Size]byte
	sum   [sha256.Size]byte
	b64   [base64Len]byte
}

// base64Len is the base64 length of the longest MAC (SHA-256).
const base64Len = (sha256.Size + 2) / 3 * 4

// mac returns HMAC(s, msg) with method m, in ms.sum.
func (ms *macScratch) mac(s *Secret, m Method, msg []byte) []byte {
	h := ms.h[m]
	if h == nil {
		h = newHash[m]().(stateHash)
		ms.h[m] = h
	}
	st := &s.states[m]
	_ = h.UnmarshalBinary(st.inner) // our own MarshalBinary output: cannot fail
	h.Write(msg)
	inner := h.Sum(ms.inner[:0])
	_ = h.UnmarshalBinary(st.outer)
	h.Write(inner)
	return h.Sum(ms.sum[:0])
}

// signature returns base64(HMAC(s, msg)), in ms.b64.
func (ms *macScratch) signature(s *Secret, m Method, msg []byte) []byte {
	sum := ms.mac(s, m, msg)
	n := base64.StdEncoding.EncodedLen(len(sum))
	base64.StdEncoding.Encode(ms.b64[:n], sum)
	return ms.b64[:n]
}

// matches reports in constant time (per secret) whether sig is the signature of msg
// under one of the secrets.
func (ms *macScratch) matches(secrets []*Secret, m Method, msg, sig []byte) bool {
	ok := 0
	for _, s := range secrets {
		if s != nil {
			ok |= subtle.ConstantTimeCompare(ms.signature(s, m, msg), sig)
		}
	}
	return ok == 1
}
