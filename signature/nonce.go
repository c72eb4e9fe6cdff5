package signature

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// NonceStore remembers the nonces used within the signature window. It is the seam
// between the signature check and replay protection: this package ships
// LocalNonceStore, which protects one node; a cluster-wide store (the ratelimit /
// cluster packages, which gossip used nonces to every member) implements the same
// interface and replaces it in Verifier.Nonces without any change here.
type NonceStore interface {
	// Use records nonce as used at now and reports true, or reports false when it was
	// already used within the window before now. It must be safe for concurrent use and
	// must not keep nonce (the slice is the request's; copy or hash it).
	Use(nonce []byte, now time.Time) bool
}

// NonceHorizon is implemented by a NonceStore that may not know the nonces used
// before some moment: a node that crashed loses the nonces it held in memory, and a
// call signed before the crash could be sent again after it as if new. Verify refuses
// a call whose X-Ca-Timestamp is before the horizon (ErrSignedBeforeRestart), and so
// leaves the store nothing to vouch for that it cannot.
type NonceHorizon interface {
	// HorizonMillis returns the moment, in Unix milliseconds, from which the store
	// knows every nonce used; 0 when it knows the whole window.
	HorizonMillis() int64
}

// nonceShards spreads the store over this many locks, so concurrent requests seldom
// meet on one. A power of two.
const nonceShards = 64

// LocalNonceStore is a NonceStore for one node: bounded, lock-sharded, and allocation
// free once its maps have grown. It keeps a 128-bit keyed hash of each nonce (two
// maphash seeds, random per process) with its expiry, and forgets it a window later.
//
// Memory is bounded by the capacity given to NewLocalNonceStore. When a shard is full
// of unexpired nonces, the oldest is forgotten early (counted by Evicted): the store
// then protects against replays of the most recent nonces only, rather than refusing
// legitimate calls. Size it above the peak signed requests per window per node.
//
// A LocalNonceStore is safe for concurrent use.
type LocalNonceStore struct {
	window  time.Duration
	seeds   [2]maphash.Seed
	shards  [nonceShards]nonceShard
	evicted atomic.Uint64
}

type nonceKey [2]uint64

type nonceEntry struct {
	key    nonceKey
	expiry int64 // unix nanoseconds
}

type nonceShard struct {
	mu sync.Mutex
	// seen maps a nonce to its expiry. ring holds the same entries in the order they
	// were used, so expired ones are dropped from the head without scanning the map.
	seen       map[nonceKey]int64
	ring       []nonceEntry
	head, size int
	_          [64]byte // keep shards on separate cache lines
}

// NewLocalNonceStore returns a store that remembers each nonce for window (zero means
// DefaultWindow) and holds at most capacity nonces (at least 64 in all).
func NewLocalNonceStore(window time.Duration, capacity int) *LocalNonceStore {
	if window <= 0 {
		window = DefaultWindow
	}
	per := (capacity + nonceShards - 1) / nonceShards
	if per < 1 {
		per = 1
	}
	s := &LocalNonceStore{window: window, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	for i := range s.shards {
		s.shards[i].seen = make(map[nonceKey]int64, per)
		s.shards[i].ring = make([]nonceEntry, per)
	}
	return s
}

// Use implements NonceStore.
func (s *LocalNonceStore) Use(nonce []byte, now time.Time) bool {
	k := nonceKey{maphash.Bytes(s.seeds[0], nonce), maphash.Bytes(s.seeds[1], nonce)}
	sh := &s.shards[k[0]&(nonceShards-1)]
	t := now.UnixNano()

	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.expire(t)
	if exp, ok := sh.seen[k]; ok && exp > t {
		return false
	}
	if sh.size == len(sh.ring) {
		sh.drop()
		s.evicted.Add(1)
	}
	exp := t + int64(s.window)
	sh.seen[k] = exp
	sh.ring[(sh.head+sh.size)%len(sh.ring)] = nonceEntry{k, exp}
	sh.size++
	return true
}

// expire drops the entries at the head of the ring that have expired at t. Clocks may
// step back, so an entry behind an unexpired head may outlive its expiry a little; the
// map check in Use still compares expiries, so it is never mistaken for a live nonce.
func (sh *nonceShard) expire(t int64) {
	for sh.size > 0 && sh.ring[sh.head].expiry <= t {
		sh.drop()
	}
}

// drop forgets the oldest entry.
func (sh *nonceShard) drop() {
	e := sh.ring[sh.head]
	// The map may hold a newer use of the same nonce (after this one expired); keep it.
	if exp, ok := sh.seen[e.key]; ok && exp == e.expiry {
		delete(sh.seen, e.key)
	}
	sh.head = (sh.head + 1) % len(sh.ring)
	sh.size--
}

// Len returns how many nonces the store holds, expired ones not yet dropped included.
func (s *LocalNonceStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.size
		sh.mu.Unlock()
	}
	return n
}

// Evicted returns how many unexpired nonces were forgotten early because a shard was
// full: a non-zero, growing value means the capacity is too small for the traffic.
func (s *LocalNonceStore) Evicted() uint64 { return s.evicted.Load() }

var _ NonceStore = (*LocalNonceStore)(nil)
