package node

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tollgate/tollgate/cluster"
	"golang.org/x/sys/unix"
)

// A node's workers count quotas as members of their own, and the quota protocol has
// every member send its counts to every other every 5 ms. Between workers of one node
// those messages go through rings in memory the node shares with them, not UDP: over
// UDP, two workers' messages to each other cost 8% more CPU per request under load
// (the sends and receives, and the Go runtime's monitor thread they keep waking), as
// much as the whole pipeline's signature check. A worker drains its rings every
// meshPoll, which adds at most that to a message's way; nothing else changes. After
// meshIdlePolls empty polls it drains them every meshPollIdle instead, until a message
// comes: an idle node's workers hear only heartbeats, and a thousand wake-ups a second
// were most of an idle worker's CPU. (Waking the reader with an eventfd per message was
// tried: each wake-up cost more than the polls it saved, while quota batches still
// flowed every 5 ms at idle.)
//
// The mesh file holds one ring per ordered pair of worker slots (from, to): a
// single-producer single-consumer queue of frames (length, channel, bytes).
const (
	meshRingSize = 64 << 10 // a frame is at most a UDP packet (~1.2 KB); 50 of them queue
	meshHdr      = 128      // head and tail, a cache line each
	meshPoll     = time.Millisecond
	meshPollIdle = 10 * time.Millisecond
	// meshIdlePolls: 50 ms without a message, ten quota flushes.
	meshIdlePolls = 50
)

type meshRing struct {
	head *atomic.Uint64 // consumer's position (bytes read)
	tail *atomic.Uint64 // producer's position (bytes written)
	data []byte
}

// mesh is one process's mapping of the node's mesh file.
type mesh struct {
	mem   []byte
	n     int
	rings []meshRing // by from*n + to
}

func meshSize(n int) int { return n * n * (meshHdr + meshRingSize) }

// newMeshFile creates the mesh file for n workers, in memory.
func newMeshFile(n int) (*os.File, error) {
	fd, err := unix.MemfdCreate("tollgate-mesh", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("worker mesh (memfd): %w", err)
	}
	f := os.NewFile(uintptr(fd), "tollgate-mesh")
	if err := f.Truncate(int64(meshSize(n))); err != nil {
		f.Close()
		return nil, fmt.Errorf("worker mesh: %w", err)
	}
	return f, nil
}

func mapMesh(f *os.File, n int) (*mesh, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, meshSize(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("worker mesh: map: %w", err)
	}
	m := &mesh{mem: mem, n: n, rings: make([]meshRing, n*n)}
	for i := range m.rings {
		base := i * (meshHdr + meshRingSize)
		m.rings[i] = meshRing{
			head: (*atomic.Uint64)(unsafe.Pointer(&mem[base])),
			tail: (*atomic.Uint64)(unsafe.Pointer(&mem[base+64])),
			data: mem[base+meshHdr : base+meshHdr+meshRingSize],
		}
	}
	return m, nil
}

// put appends a frame; it reports false (and drops it, as UDP would) when the ring
// has no room: its reader is gone or stalled. One producer per ring.
func (r *meshRing) put(channel byte, msg []byte) bool {
	need := uint64(8+len(msg)+7) &^ 7
	head, tail := r.head.Load(), r.tail.Load()
	if need > meshRingSize || tail-head+need > meshRingSize {
		return false
	}
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(msg)))
	hdr[4] = channel
	r.copyIn(tail, hdr[:])
	r.copyIn(tail+8, msg)
	r.tail.Store(tail + need) // publishes the frame
	return true
}

// take calls f with each frame queued, then frees them. One consumer per ring.
func (r *meshRing) take(buf []byte, f func(channel byte, msg []byte)) []byte {
	head, tail := r.head.Load(), r.tail.Load()
	for head < tail {
		var hdr [8]byte
		r.copyOut(hdr[:], head)
		n := int(binary.LittleEndian.Uint32(hdr[:]))
		if n > meshRingSize || head+8+uint64(n) > tail { // torn by a writer that died: drop the rest
			head = tail
			break
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		r.copyOut(buf, head+8)
		f(hdr[4], buf)
		head += uint64(8+n+7) &^ 7
	}
	r.head.Store(head)
	return buf
}

func (r *meshRing) copyIn(pos uint64, b []byte) {
	for len(b) > 0 {
		off := int(pos % meshRingSize)
		k := copy(r.data[off:], b)
		b, pos = b[k:], pos+uint64(k)
	}
}

func (r *meshRing) copyOut(b []byte, pos uint64) {
	for len(b) > 0 {
		off := int(pos % meshRingSize)
		k := copy(b, r.data[off:])
		b, pos = b[k:], pos+uint64(k)
	}
}

// meshTransport is a worker's quota transport: the other workers of its node through
// the mesh, every other counting member through gossip.
type meshTransport struct {
	view   *cluster.View
	mesh   *mesh
	bal    *connBalance // which process serves each slot
	self   int
	prefix string // member names of this node's workers start with it

	sendMu sync.Mutex // the rings from self have one producer
	mu     sync.Mutex
	onMsg  map[byte]func([]byte)
	stop   chan struct{}
	done   chan struct{}
}

// workerName is a worker's member name: the slot is in it (the mesh addresses slots),
// and so is the pid, because memberlist will not let a restarted worker take the dead
// one's name at a new address.
func workerName(nodeID string, slot, pid int) string {
	return fmt.Sprintf("%s/w%d.%d", nodeID, slot, pid)
}

func newMeshTransport(view *cluster.View, m *mesh, bal *connBalance, nodeID string, self int) *meshTransport {
	t := &meshTransport{view: view, mesh: m, bal: bal, self: self, prefix: nodeID + "/w",
		onMsg: map[byte]func([]byte){}, stop: make(chan struct{}), done: make(chan struct{})}
	go t.poll()
	return t
}

func (t *meshTransport) LocalName() string      { return t.view.LocalName() }
func (t *meshTransport) local(name string) bool { return strings.HasPrefix(name, t.prefix) }

// MemberNames lists the counting members, less this node's workers that have died:
// the node knows at once (it reaped them), gossip only after a second or so, and a
// dead member's quota reservations stay held until it is known dead.
func (t *meshTransport) MemberNames() []string {
	names := t.view.MemberNames()
	return slices.DeleteFunc(names, func(name string) bool {
		slot, pid, ok := parseWorkerName(name, t.prefix)
		return ok && slot < t.mesh.n && t.bal.pid(slot).Load() != int64(pid)
	})
}

// parseWorkerName reads the slot and pid from a worker's member name.
func parseWorkerName(name, prefix string) (slot, pid int, ok bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, 0, false
	}
	s, p, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, 0, false
	}
	slot, err1 := strconv.Atoi(s)
	pid, err2 := strconv.Atoi(p)
	return slot, pid, err1 == nil && err2 == nil
}

// Introduce asks a member over gossip to exchange state (see ratelimit.Introducer).
func (t *meshTransport) Introduce(name string) { t.view.Introduce(name) }

func (t *meshTransport) SendToAll(channel byte, msg []byte) error {
	t.sendMu.Lock()
	for to := range t.mesh.n {
		if to != t.self {
			t.mesh.rings[t.self*t.mesh.n+to].put(channel, msg)
		}
	}
	t.sendMu.Unlock()
	return t.view.SendToAllBut(channel, msg, t.local)
}

func (t *meshTransport) Register(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	return t.register(t.view.Register, channel, onMsg, localState, mergeState)
}

// RegisterLarge is Register for a join state built on request (cluster.Gossip).
func (t *meshTransport) RegisterLarge(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	return t.register(t.view.RegisterLarge, channel, onMsg, localState, mergeState)
}

func (t *meshTransport) register(on func(byte, func([]byte), func(bool) []byte, func([]byte, bool)) error,
	channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	if err := on(channel, onMsg, localState, mergeState); err != nil {
		return err
	}
	t.mu.Lock()
	t.onMsg[channel] = onMsg
	t.mu.Unlock()
	return nil
}

// poll delivers what the other workers sent, every meshPoll, or every meshPollIdle
// while nothing comes.
func (t *meshTransport) poll() {
	defer close(t.done)
	interval := meshPoll
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var buf []byte
	got := false
	deliver := func(channel byte, msg []byte) {
		got = true
		t.mu.Lock()
		f := t.onMsg[channel]
		t.mu.Unlock()
		if f != nil {
			f(msg)
		}
	}
	empty := 0
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
		}
		got = false
		for from := range t.mesh.n {
			if from != t.self {
				buf = t.mesh.rings[from*t.mesh.n+t.self].take(buf, deliver)
			}
		}
		switch {
		case got:
			empty = 0
			if interval != meshPoll {
				interval = meshPoll
				tick.Reset(interval)
			}
		case interval == meshPoll:
			if empty++; empty >= meshIdlePolls {
				interval = meshPollIdle
				tick.Reset(interval)
			}
		}
	}
}

func (t *meshTransport) close() {
	close(t.stop)
	<-t.done
}
