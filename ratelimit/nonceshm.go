package ratelimit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A shared nonce file holds one nonce table that every process on a host mapping it
// uses at once: a nonce used in one is refused in the others at the next lookup, with
// no message between them. It is what lets processes that each serve part of a host's
// connections (one per CPU, so a connection's work stays on its CPU) act as one node.
//
// Layout, little-endian, fixed when the file is created:
//
//	0       header (shmHeader), padded to 4 KiB
//	4 KiB   nonceShards shard controls of 64 bytes (lock, table state, counters)
//	8 KiB   nonceShards pending queues of shmPendingCap digests
//	…       nonceShards tables of slotsPerShard 20-byte slots, from a 4 KiB boundary
//
// The tables never grow: a shared file is sized for MaxEntries when it is created.
const (
	shmMagic      = "TGNONCE1"
	shmHeaderSize = 4096
	shmShardSize  = 64
	// shmPendingCap bounds the digests a shard queues for a gossiping process between
	// its flushes (1 ms): about 16k nonces a host, half a second at 30k signed calls a
	// second. A digest that finds the queue full is counted in shmShard.dropped and not
	// sent to the other nodes.
	shmPendingCap = 256
)

type shmHeader struct {
	magic         [8]byte
	shards        uint32
	pendingCap    uint32
	slotsPerShard uint64
	// wanted counts the gossiping processes mapping the file that have peers: while it
	// is above zero, every fresh nonce is queued for them to send.
	wanted atomic.Int32
	_      int32
	// horizon is NonceStore.SetHorizon's moment, shared so every process refuses the
	// calls signed before it (zero in a file written before it existed: none).
	horizon atomic.Int64
}

// shmShard is a shard's control block. lock holds the pid of the process in the
// shard (0: free); everything after it is read and written only under it.
type shmShard struct {
	lock                             atomic.Uint32
	pendingN                         uint32
	n, hand                          int64
	used, refused, overflow, dropped uint64
	_                                [8]byte
}

// sharedNonces is one process's mapping of a shared nonce file.
type sharedNonces struct {
	mem     []byte
	hdr     *shmHeader
	shards  []shmShard
	pending []byte
	slots   []nonceSlot
	per     int // slots a shard
	pid     uint32
	kept    bool // the file already held a table: it outlived the process that wrote it
}

func shmLayout(slotsPerShard int) (pendingOff, slotsOff, size int) {
	pendingOff = shmHeaderSize + nonceShards*shmShardSize
	slotsOff = pendingOff + nonceShards*shmPendingCap*digestLen
	slotsOff = (slotsOff + 4095) &^ 4095
	size = slotsOff + nonceShards*slotsPerShard*int(unsafe.Sizeof(nonceSlot{}))
	return
}

// openSharedNonces maps path, creating and sizing it for slotsPerShard if it is new or
// empty. An existing file must have been created with the same size: a mismatch is an
// error that names both, and changes nothing.
func openSharedNonces(path string, slotsPerShard int) (*sharedNonces, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shared nonce file: %w", err)
	}
	defer f.Close()
	// Two processes may open a new file at once: the first to hold the lock sizes it.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("shared nonce file %s: lock: %w", path, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	pendingOff, slotsOff, size := shmLayout(slotsPerShard)
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shared nonce file: %w", err)
	}
	fresh := fi.Size() == 0
	if fresh {
		if err := f.Truncate(int64(size)); err != nil {
			return nil, fmt.Errorf("shared nonce file %s: size it: %w", path, err)
		}
	} else if fi.Size() < shmHeaderSize {
		return nil, fmt.Errorf("shared nonce file %s: %d bytes, too short for a nonce table", path, fi.Size())
	}
	mapped := int(fi.Size())
	if fresh {
		mapped = size
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, mapped, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shared nonce file %s: map: %w", path, err)
	}
	hdr := (*shmHeader)(unsafe.Pointer(&mem[0]))
	if fresh {
		hdr.shards = nonceShards
		hdr.pendingCap = shmPendingCap
		hdr.slotsPerShard = uint64(slotsPerShard)
		copy(hdr.magic[:], shmMagic) // last: a file with its magic is complete
	} else {
		var bad error
		switch {
		case !bytes.Equal(hdr.magic[:], []byte(shmMagic)):
			bad = errors.New("not a Tollgate nonce table (or from another version)")
		case hdr.shards != nonceShards || hdr.pendingCap != shmPendingCap:
			bad = fmt.Errorf("laid out for %d shards and %d pending, this build uses %d and %d", hdr.shards, hdr.pendingCap, nonceShards, shmPendingCap)
		case hdr.slotsPerShard != uint64(slotsPerShard) || mapped != size:
			bad = fmt.Errorf("sized for %d slots a shard, this store wants %d (its MaxEntries differs)", hdr.slotsPerShard, slotsPerShard)
		}
		if bad != nil {
			_ = unix.Munmap(mem)
			return nil, fmt.Errorf("shared nonce file %s: %w", path, bad)
		}
	}
	if err := backAll(mem); err != nil {
		_ = unix.Munmap(mem)
		return nil, fmt.Errorf("shared nonce file %s: back its %d MiB with memory: %w (a smaller nonce capacity needs less)", path, mapped>>20, err)
	}
	s := &sharedNonces{mem: mem, hdr: hdr, per: slotsPerShard, pid: uint32(os.Getpid()), kept: !fresh}
	s.shards = unsafe.Slice((*shmShard)(unsafe.Pointer(&mem[shmHeaderSize])), nonceShards)
	s.pending = mem[pendingOff:slotsOff]
	s.slots = unsafe.Slice((*nonceSlot)(unsafe.Pointer(&mem[slotsOff])), nonceShards*slotsPerShard)
	return s, nil
}

// table returns shard i's slots.
func (s *sharedNonces) table(i int) []nonceSlot {
	return s.slots[i*s.per : (i+1)*s.per : (i+1)*s.per]
}

// pendingOf returns shard i's pending queue.
func (s *sharedNonces) pendingOf(i int) []byte {
	const per = shmPendingCap * digestLen
	return s.pending[i*per : (i+1)*per : (i+1)*per]
}

// Spinning before yielding: a shard is held for well under a microsecond, so a
// waiter usually gets it within a few tries; past that the holder is likely off its
// CPU, and yielding lets it (or this process's other goroutines) run.
const (
	shmSpins  = 64
	shmYields = 64
	// shmStaleCheck is how long a waiter sleeps between checks that the holder is
	// still alive. A process killed inside a shard leaves its pid in the lock; the
	// next waiter to find that pid gone takes the shard over. The entry it was
	// writing may be lost (one nonce forgotten), never the table.
	shmStaleCheck = 10 * time.Millisecond
)

func (s *sharedNonces) lock(sh *shmShard) {
	for i := 0; ; i++ {
		if sh.lock.Load() == 0 && sh.lock.CompareAndSwap(0, s.pid) {
			return
		}
		switch {
		case i < shmSpins:
		case i < shmSpins+shmYields:
			runtime.Gosched()
		default:
			time.Sleep(50 * time.Microsecond)
			if (i-shmSpins-shmYields)%int(shmStaleCheck/(50*time.Microsecond)) != 0 {
				continue
			}
			if owner := sh.lock.Load(); owner != 0 && owner != s.pid && errors.Is(unix.Kill(int(owner), 0), unix.ESRCH) {
				if sh.lock.CompareAndSwap(owner, s.pid) {
					return
				}
			}
		}
	}
}

func (s *sharedNonces) unlock(sh *shmShard) { sh.lock.Store(0) }

// close unmaps the file. Only once nothing can use the mapping any more.
func (s *sharedNonces) close() { _ = unix.Munmap(s.mem) }
