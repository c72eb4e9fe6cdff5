package ratelimit

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestNonceShardSize: shards are locked by different cores at once; each fills two
// cache lines of its own.
func TestNonceShardSize(t *testing.T) {
	if n := unsafe.Sizeof(nonceShard{}); n != 128 {
		t.Fatalf("a nonce shard is %d bytes, want 128: adjust its padding", n)
	}
}

// TestNonceTableAgainstAMap drives a table and a plain map with the same uses, over a
// small key space (so keys repeat and expire) and a clock that moves on, with a tiny
// table that must grow, sweep and refuse when full, and checks every answer and
// every live key against the map.
func TestNonceTableAgainstAMap(t *testing.T) {
	const (
		keys     = 5000
		ops      = 200_000
		ttl      = 7
		maxSlots = 4096 // holds 3072 entries; keys live at once can exceed that
	)
	rng := rand.New(rand.NewPCG(1, 2))
	var tb nonceTable
	ref := map[digest]uint32{} // key → expiry second
	key := func(k int) digest {
		var d digest
		// Spread like SHA-256, but with clusters of equal home slots too.
		binary.LittleEndian.PutUint64(d[:8], uint64(k))
		binary.LittleEndian.PutUint64(d[8:], uint64(k%97)*0x9e3779b97f4a7c15)
		return d
	}
	now := uint32(100)
	fulls := 0
	for i := range ops {
		if rng.IntN(2000) == 0 {
			now++
		}
		d := key(rng.IntN(keys))
		fresh, full := tb.use(&d, now+ttl, now, maxSlots)
		e, seen := ref[d]
		wantFresh := !seen || e <= now
		switch {
		case full:
			fulls++
			if !wantFresh {
				t.Fatalf("op %d: a live key was answered full instead of used", i)
			}
			if len(tb.slots) != maxSlots || (tb.n+1)*4 <= maxSlots*3 {
				t.Fatalf("op %d: full at %d of %d slots, cap %d", i, tb.n, len(tb.slots), maxSlots)
			}
		case fresh != wantFresh:
			t.Fatalf("op %d: fresh=%v, the map says %v", i, fresh, wantFresh)
		case fresh:
			ref[d] = now + ttl
		}
		if i%20_000 == 0 {
			for k, e := range ref {
				if e > now && tb.find(&k) < 0 {
					t.Fatalf("op %d: a live key is lost", i)
				}
			}
			if tb.n > len(tb.slots)*3/4 {
				t.Fatalf("op %d: %d of %d slots used", i, tb.n, len(tb.slots))
			}
		}
	}
	if len(tb.slots) != maxSlots {
		t.Errorf("the table has %d slots, want it grown to its cap %d", len(tb.slots), maxSlots)
	}
	if fulls == 0 {
		t.Error("the table was never full: the test did not reach its cap")
	}
	// Once everything has expired, a full table takes new keys again within a
	// bounded number of calls (the sweep finds the expired slots as it goes).
	now += ttl + 1
	took := 0
	for k := keys; took < maxSlots; k++ {
		d := key(k)
		took++
		if fresh, _ := tb.use(&d, now+ttl, now, maxSlots); fresh {
			break
		}
	}
	if took >= maxSlots {
		t.Fatalf("a table full of expired keys took no new key in %d calls", took)
	}
}

// TestNonceTableRemoveKeepsChains: removing an entry in the middle of a run of
// colliding keys leaves every other one findable (backward-shift deletion), also
// across the table's end.
func TestNonceTableRemoveKeepsChains(t *testing.T) {
	var tb nonceTable
	tb.resize(minNonceSlots)
	mask := uint64(minNonceSlots - 1)
	mk := func(id, home uint64) digest {
		var d digest
		binary.LittleEndian.PutUint64(d[:8], id)
		binary.LittleEndian.PutUint64(d[8:], home)
		return d
	}
	var ds []digest
	for i := range uint64(12) {
		home := (mask - 2 + i/3) & mask // runs of three keys per home, wrapping at the end
		d := mk(i, home)
		if fresh, _ := tb.use(&d, 10, 5, minNonceSlots); !fresh {
			t.Fatal("a new key was refused")
		}
		ds = append(ds, d)
	}
	for _, victim := range []int{0, 4, 7, 11} {
		i := tb.find(&ds[victim])
		if i < 0 {
			t.Fatalf("key %d lost before removal", victim)
		}
		tb.remove(i)
		for k, d := range ds {
			found := tb.find(&d) >= 0
			removed := k == 0 || k == 4 && victim >= 4 || k == 7 && victim >= 7 || k == 11 && victim >= 11
			if found == removed {
				t.Fatalf("after removing %d: key %d found=%v", victim, k, found)
			}
		}
	}
}
