package cluster

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"
)

// bigState is n deterministic bytes that no two offsets share a pattern of, so a chunk
// filed at the wrong offset shows.
func bigState(n int, seed byte) []byte {
	b := make([]byte, 0, n+sha256.Size)
	sum := sha256.Sum256([]byte{seed})
	for len(b) < n {
		b = append(b, sum[:]...)
		sum = sha256.Sum256(sum[:])
	}
	return b[:n]
}

// TestGossipJoinCarriesStateOverMemberlistsLimit: memberlist fails a push/pull whose
// state is over 20 MiB, and with it the join. A node's used nonces pass that at about
// a million; the state is then offered and streamed, and Join still returns only once
// it is merged, whole, on each channel the joiner registered (with and without
// encryption). A channel the joiner does not merge is not sent.
func TestGossipJoinCarriesStateOverMemberlistsLimit(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, 32)} {
		name := "plain"
		if key != nil {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) {
			a := newTestGossip(t, "node1", key)
			b := newTestGossip(t, "node2", key)
			large := bigState(45<<20+123, 1) // several chunks, the last one short
			small := []byte("small-state-of-a")
			unwanted := bigState(3<<20, 2)
			asked := 0
			var amu sync.Mutex
			mustRegister(t, a.Register(3, nil, func(join bool) []byte {
				if !join {
					return nil
				}
				return large
			}, nil))
			mustRegister(t, a.Register(4, nil, func(bool) []byte { return small }, nil))
			mustRegister(t, a.Register(5, nil, func(bool) []byte {
				amu.Lock()
				asked++
				amu.Unlock()
				return unwanted
			}, nil))
			var mu sync.Mutex
			merged := map[byte][]byte{}
			merge := func(ch byte) func([]byte, bool) {
				return func(buf []byte, join bool) {
					if !join {
						return
					}
					mu.Lock()
					merged[ch] = append([]byte(nil), buf...)
					mu.Unlock()
				}
			}
			mustRegister(t, b.Register(3, nil, nil, merge(3)))
			mustRegister(t, b.Register(4, nil, nil, merge(4)))
			// Channel 5: b has no handler, so it must not be streamed to b.
			if _, err := b.Join([]string{a.Addr()}); err != nil {
				t.Fatalf("join: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if !bytes.Equal(merged[3], large) {
				t.Fatalf("channel 3 merged %d bytes, want the %d offered, equal", len(merged[3]), len(large))
			}
			if !bytes.Equal(merged[4], small) {
				t.Fatalf("channel 4 merged %q, want %q", merged[4], small)
			}
			if _, ok := merged[5]; ok {
				t.Fatal("channel 5 merged on a member without a handler")
			}
			a.bulk.mu.Lock()
			left := len(a.bulk.offered)
			a.bulk.mu.Unlock()
			if left != 0 {
				t.Fatalf("the sender still keeps %d offered states after they were asked for", left)
			}
		})
	}
}

// TestGossipJoinFailsWhenOfferedStateDoesNotCome: a joiner whose offered state does
// not arrive (here the sender's streams to it are dropped) merges nothing of it and
// reports the join as failed, rather than admitting calls without it.
func TestGossipJoinFailsWhenOfferedStateDoesNotCome(t *testing.T) {
	defer func(d time.Duration) { bulkIdle = d }(bulkIdle)
	bulkIdle = 300 * time.Millisecond
	a := newTestGossip(t, "node1", nil)
	b := newTestGossip(t, "node2", nil)
	mustRegister(t, a.Register(3, nil, func(join bool) []byte { return bigState(inlineStateMax+1, 3) }, nil))
	mustRegister(t, b.Register(3, nil, nil, func([]byte, bool) { t.Error("a state merged that never arrived") }))
	a.SetDropFilter(func(addr string) bool { return addr == b.Addr() })
	if _, err := b.Join([]string{a.Addr()}); err == nil || !strings.Contains(err.Error(), "did not arrive whole") {
		t.Fatalf("join = %v, want it failed for the missing state", err)
	}
}

func mustRegister(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestGossipJoinWaitsForALargeStateBuiltOnRequest: a RegisterLarge user's join state
// is built when the joiner asks for it, after memberlist's exchange, which would have
// timed out (2 s) waiting for one that takes 3 s to build. An empty one arrives too.
func TestGossipJoinWaitsForALargeStateBuiltOnRequest(t *testing.T) {
	a := newTestGossip(t, "node1", nil)
	b := newTestGossip(t, "node2", nil)
	state := bigState(5<<20, 4)
	mustRegister(t, a.RegisterLarge(3, nil, func(join bool) []byte {
		if join {
			time.Sleep(3 * time.Second) // longer than memberlist's TCPTimeout
		}
		return state
	}, nil))
	mustRegister(t, a.RegisterLarge(4, nil, func(bool) []byte { return nil }, nil))
	var mu sync.Mutex
	merged := map[byte][]byte{}
	for _, ch := range []byte{3, 4} {
		mustRegister(t, b.Register(ch, nil, nil, func(buf []byte, join bool) {
			mu.Lock()
			merged[ch] = append([]byte{}, buf...)
			mu.Unlock()
		}))
	}
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("join: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(merged[3], state) {
		t.Fatalf("channel 3 merged %d bytes, want the %d built on request", len(merged[3]), len(state))
	}
	if got, ok := merged[4]; !ok || len(got) != 0 {
		t.Fatalf("channel 4 (empty): merged %v, %d bytes; want merged, empty", ok, len(got))
	}
}
