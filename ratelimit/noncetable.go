package ratelimit

import "encoding/binary"

// nonceTable is one shard's used nonces: open addressing with linear probing over
// 20-byte slots, a digest and its expiry in whole seconds. A Go map with a queue for
// expiry took about 75 bytes a nonce and two to three map operations per use; this
// takes 20 to 40 (the table doubles at three quarters full) and one probe sequence.
// Expired slots are swept a few per insert and removed by backward shift, so no
// tombstones pile up and probe sequences stay short.
//
// Not safe for concurrent use: the shard's mutex guards it.
type nonceTable struct {
	slots []nonceSlot
	n     int // occupied slots, expired ones not yet swept included
	hand  int // where the sweep goes on
}

type nonceSlot struct {
	d   digest
	exp uint32 // seconds since the store's epoch; 0: empty
}

// nonceSweepPerInsert is how many slots an insert sweeps: more than one, so the hand
// laps the table faster than inserts fill it.
const nonceSweepPerInsert = 2

// nonceSweepWhenFull is how many slots a use sweeps when the table is at its cap.
const nonceSweepWhenFull = 64

// minNonceSlots is a table's first size; it doubles from there up to the shard's cap.
const minNonceSlots = 1024

func (t *nonceTable) home(d *digest) int {
	return int(binary.LittleEndian.Uint64(d[8:]) & uint64(len(t.slots)-1))
}

// find returns the slot of d, or -1.
func (t *nonceTable) find(d *digest) int {
	if len(t.slots) == 0 {
		return -1
	}
	mask := len(t.slots) - 1
	for i := t.home(d); t.slots[i].exp != 0; i = (i + 1) & mask {
		if t.slots[i].d == *d {
			return i
		}
	}
	return -1
}

// use records d as used until exp unless a live entry (expiring after now) has it.
// maxSlots caps the table; when it is full of live entries, use reports full.
func (t *nonceTable) use(d *digest, exp, now uint32, maxSlots int) (fresh, full bool) {
	t.sweep(now, nonceSweepPerInsert)
	if i := t.find(d); i >= 0 {
		if t.slots[i].exp > now {
			return false, false
		}
		t.slots[i].exp = exp // used before, expired, not swept yet
		return true, false
	}
	if (t.n+1)*4 > len(t.slots)*3 {
		if len(t.slots)*2 <= maxSlots {
			t.resize(max(minNonceSlots, len(t.slots)*2))
		} else {
			// Full: sweep a bounded stretch for expired slots. A whole-table sweep on
			// every refused call would make a full store a CPU cliff, exactly when
			// it is overloaded; expired slots are found over the next calls instead.
			t.sweep(now, nonceSweepWhenFull)
			if (t.n+1)*4 > len(t.slots)*3 {
				return false, true
			}
		}
	}
	mask := len(t.slots) - 1
	i := t.home(d)
	for t.slots[i].exp != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = nonceSlot{d: *d, exp: exp}
	t.n++
	return true, false
}

// sweep looks at up to k slots from the hand and removes the expired ones.
func (t *nonceTable) sweep(now uint32, k int) {
	if len(t.slots) == 0 {
		return
	}
	mask := len(t.slots) - 1
	for ; k > 0; k-- {
		s := &t.slots[t.hand]
		if s.exp != 0 && s.exp <= now {
			// The shift may move a later entry into this slot: look at it again.
			t.remove(t.hand)
			continue
		}
		t.hand = (t.hand + 1) & mask
	}
}

// remove empties slot i and moves back the entries after it that it separated from
// their home slot (backward-shift deletion for linear probing).
func (t *nonceTable) remove(i int) {
	mask := len(t.slots) - 1
	t.slots[i] = nonceSlot{}
	t.n--
	for j := (i + 1) & mask; t.slots[j].exp != 0; j = (j + 1) & mask {
		h := t.home(&t.slots[j].d)
		// The entry at j stays if its home lies cyclically in (i, j].
		if i <= j {
			if i < h && h <= j {
				continue
			}
		} else if i < h || h <= j {
			continue
		}
		t.slots[i] = t.slots[j]
		t.slots[j] = nonceSlot{}
		i = j
	}
}

func (t *nonceTable) resize(size int) {
	old := t.slots
	t.slots = make([]nonceSlot, size)
	// Write every page of a fresh table once, in order, before the inserts probe it.
	// The heap hands a large table out as untouched memory, and the probe below reads
	// a slot before it writes one: a read fault maps the kernel's shared zero page, the
	// write then faults again to copy it and flushes the TLB of every core running the
	// node, an interrupt between the two vCPUs. Writing first halves the faults and
	// drops the flushes, which took 1.1% of the node's CPU under the bench's signed
	// load.
	clear(t.slots)
	t.hand = 0
	mask := size - 1
	for k := range old {
		if old[k].exp == 0 {
			continue
		}
		i := t.home(&old[k].d)
		for t.slots[i].exp != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = old[k]
	}
}
