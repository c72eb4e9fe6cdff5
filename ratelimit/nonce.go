package ratelimit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NonceConfig configures a NonceStore.
type NonceConfig struct {
	// Transport reaches the other nodes; nil keeps nonces on this node only.
	Transport Transport
	// Channel is the Transport channel for nonces (default ChannelNonces).
	Channel byte
	// TTL is how long a used nonce is refused (default 15 minutes, the X-Ca-Timestamp
	// tolerance: a request older than that is refused by its timestamp anyway).
	TTL time.Duration
	// MaxEntries bounds memory (default DefaultMaxNonces). It is rounded up to the tables'
	// power-of-two sizes: the default holds 6,291,456 nonces, 168 MB when full (20
	// bytes a slot, at most three quarters used), enough for 7,000 signed calls a
	// second sustained over the TTL. When full, Use refuses new nonces: failing
	// closed keeps replays out at the cost of refusing signed calls.
	MaxEntries int
	// FlushInterval is how often used nonces are sent to the others (default 1ms).
	FlushInterval time.Duration
	// Clock is used for entries learned from other nodes; default time.Now.
	Clock func() time.Time
	// Registerer receives the store's metrics; nil registers none.
	Registerer prometheus.Registerer
	// SharedFile, when set, keeps the table in that file (on tmpfs: /dev/shm), mapped
	// by every store on the host that names it: a nonce used by one is refused by all
	// at once. The file is created and sized for MaxEntries if new; an existing one
	// must have been sized for the same MaxEntries. A store with a Transport sends the
	// nonces every store of the file used to its peers, so one gossiping process per
	// host is enough. The metrics then count for the whole file.
	SharedFile string
}

// DefaultMaxNonces is NonceConfig.MaxEntries when unset: a node's --nonce-capacity
// default.
const DefaultMaxNonces = 4_000_000

// NonceStore remembers used nonces cluster-wide, so a signed request cannot be
// replayed on this node or, once the nonce has reached them (a few ms), on any other.
// All methods are safe for concurrent use.
type NonceStore struct {
	cfg    NonceConfig
	shards [nonceShards]nonceShard
	shm    *sharedNonces // the shared file's mapping, or nil
	// maxSlots is a shard table's largest size: its share of MaxEntries at three
	// quarters full, rounded up to a power of two (so a shard may hold a little more).
	maxSlots int
	// alone: no other member could hear of a used nonce (or there is no transport),
	// so Use queues none and the flush loop sleeps. flush sets it from the membership,
	// but only once no peer has shown itself (a join's state exchange, a message) for
	// aloneAfter: a joining node exchanges state before it is listed as a member, and
	// a nonce used in between must still reach it. Until the first flush, nonces are
	// queued.
	alone    atomic.Bool
	aloneMu  sync.Mutex // orders flush's decision with sawPeer
	peerSeen time.Time  // the last sign of a peer; under aloneMu

	// Delivery: UDP may drop a packet, and a nonce that never arrives is a replay
	// window that never closes. So each batch has a sequence number, every peer
	// acknowledges what it got (cumulatively, in its own next message), and a batch
	// is sent again every resendAfter until every live member has acknowledged it.
	name    string
	inc     uint64 // random per process: a restarted sender starts its sequence anew
	seq     int64  // flusher-only
	unacked []nonceBatch
	ackMu   sync.Mutex
	acked   map[string]int64      // per peer: our highest sequence it has all of
	recv    map[string]*recvState // per peer: what we have of its sequence
	ackNew  bool                  // something arrived since our last message
	silent  introductions         // flusher-only: members that leave batches unacknowledged

	used, refused, overflow prometheus.CounterFunc
	entries                 prometheus.GaugeFunc

	startOnce, closeOnce sync.Once
	stop, done           chan struct{}

	// The flush loop sleeps while there is nothing to send (see flushLoop). dirty
	// says something may need sending since the last flush.
	dirty atomic.Bool
	pace  flushLoop

	horizon atomic.Int64 // SetHorizon's moment, Unix ms, without a shared file
}

const (
	nonceShards = 64
	resendAfter = 5 * time.Millisecond
	aloneAfter  = time.Second
	// maxUnacked bounds what is kept for a member that never acknowledges (it is
	// dying; memberlist will drop it within about a second).
	maxUnacked = 4096
	digestLen  = 16
)

type digest [digestLen]byte

type nonceShard struct {
	mu      sync.Mutex
	t       nonceTable
	pending []byte // digests used here since the last flush
	// Counted under mu, which Use holds anyway: shared atomic counters cost a
	// contended cache line per signed request.
	used, refused, overflow uint64
	// With a shared file, the shard's control block and pending queue there. Its
	// lock is taken after mu (mu orders this process's goroutines, and tells the
	// race detector so); t's counts and the counters above are copied in from the
	// block on lock and out on unlock.
	shm *shmShard
	q   []byte
}

type nonceBatch struct {
	seq       int64
	digests   []byte
	firstSent time.Time
	lastSent  time.Time
}

type recvState struct {
	inc     uint64
	cum     int64          // every sequence up to cum received
	ackSent int64          // the cum our last message acknowledged
	ooo     map[int64]bool // received beyond cum
}

// NewNonceStore creates a store. Start it to share nonces with the other nodes.
func NewNonceStore(cfg NonceConfig) (*NonceStore, error) {
	if cfg.Channel == 0 {
		cfg.Channel = ChannelNonces
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 15 * time.Minute
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxNonces
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	s := &NonceStore{cfg: cfg,
		stop: make(chan struct{}), done: make(chan struct{}), pace: newFlushLoop(),
		acked: map[string]int64{}, recv: map[string]*recvState{}, silent: introductions{}}
	var rb [8]byte
	_, _ = rand.Read(rb[:])
	s.inc = binary.LittleEndian.Uint64(rb[:])
	s.maxSlots = minNonceSlots
	for perShard := (cfg.MaxEntries + nonceShards - 1) / nonceShards; s.maxSlots*3/4 < perShard; {
		s.maxSlots *= 2
	}
	s.used = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_nonce_used_total", Help: "Nonces accepted as fresh on this node."},
		s.sum(func(sh *nonceShard) uint64 { return sh.used }))
	s.refused = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_nonce_replayed_total", Help: "Nonces refused because they were used before (here or on another node)."},
		s.sum(func(sh *nonceShard) uint64 { return sh.refused }))
	s.overflow = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_nonce_overflow_total", Help: "Nonces refused because the store was full (MaxEntries)."},
		s.sum(func(sh *nonceShard) uint64 { return sh.overflow }))
	s.entries = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_nonce_entries", Help: "Nonces remembered."}, func() float64 { return float64(s.Len()) })
	collectors := []prometheus.Collector{s.used, s.refused, s.overflow, s.entries}
	if cfg.SharedFile != "" {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_nonce_unsent_total",
			Help: "Nonces used in the shared file that no gossiping store took from its queue in time: other nodes never heard of them."},
			s.sum(func(sh *nonceShard) uint64 { return sh.shm.dropped })))
	}
	if cfg.Registerer != nil {
		for _, c := range collectors {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	if cfg.SharedFile != "" {
		shm, err := openSharedNonces(cfg.SharedFile, s.maxSlots)
		if err != nil {
			return nil, err
		}
		s.shm = shm
		for i := range s.shards {
			sh := &s.shards[i]
			sh.shm, sh.q = &shm.shards[i], shm.pendingOf(i)
			sh.t.slots = shm.table(i)
		}
		// The mapping goes when the store does: a call still in Use after Close keeps
		// the store, and so the mapping, alive.
		runtime.AddCleanup(s, func(m *sharedNonces) { m.close() }, shm)
	}
	s.alone.Store(cfg.Transport == nil)
	if s.shm != nil && cfg.Transport != nil {
		s.shm.hdr.wanted.Add(1)
	}
	if cfg.Transport != nil {
		s.name = cfg.Transport.LocalName()
		if err := registerLarge(cfg.Transport, cfg.Channel, s.onMsg, s.localState, s.mergeState); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SetHorizon tells the store that it does not know the nonces used before t: its
// node crashed and lost them. From then on HorizonMillis returns t, and the signature
// check refuses calls signed before it (signature.NonceHorizon), which could be
// replays of calls made before the crash. Every process sharing the table sees it.
func (s *NonceStore) SetHorizon(t time.Time) { s.horizonWord().Store(t.UnixMilli()) }

// HorizonMillis implements signature.NonceHorizon: SetHorizon's moment in Unix
// milliseconds, or 0.
func (s *NonceStore) HorizonMillis() int64 { return s.horizonWord().Load() }

// horizonWord is where the horizon is kept: the shared table's header, or the store.
func (s *NonceStore) horizonWord() *atomic.Int64 {
	if s.shm != nil {
		return &s.shm.hdr.horizon
	}
	return &s.horizon
}

// Kept reports whether the store's table outlived the process that last used it: a
// SharedFile that already held a table (on tmpfs, say), so a crash lost no nonce.
func (s *NonceStore) Kept() bool { return s.shm != nil && s.shm.kept }

// nonceDigest names a nonce by the first 16 bytes of its SHA-256: the same on every
// node, fixed-size on the wire, and no one can craft two nonces that collide.
func nonceDigest(nonce []byte) digest {
	sum := sha256.Sum256(nonce)
	var d digest
	copy(d[:], sum[:digestLen])
	return d
}

// Use records nonce as used at now and reports whether it was fresh: false if this
// node, or another whose message has arrived, used it within the TTL, or if the store
// is full. It does not block beyond one shard's lock and does not keep nonce.
func (s *NonceStore) Use(nonce []byte, now time.Time) (fresh bool) {
	var queue bool
	d := nonceDigest(nonce)
	sh := &s.shards[d[0]%nonceShards]
	t := now.UnixNano()
	s.lock(sh)
	fresh, full := s.insertLocked(sh, d, t+int64(s.cfg.TTL), t)
	switch {
	case fresh:
		// Read under the lock: localState marks a peer before it snapshots a shard,
		// so a nonce is either in the snapshot a joining node gets or queued for it.
		if queue = s.queueing(); queue {
			s.enqueue(sh, &d)
		}
		sh.used++
	case full:
		sh.overflow++
	default:
		sh.refused++
	}
	s.unlock(sh)
	if queue && s.cfg.Transport != nil {
		s.markDirty()
	}
	return fresh
}

// lock takes a shard: its mutex, and with a shared file the file's lock on it too,
// loading what the other processes left there.
func (s *NonceStore) lock(sh *nonceShard) {
	sh.mu.Lock()
	if c := sh.shm; c != nil {
		s.shm.lock(c)
		sh.t.n, sh.t.hand = int(c.n), int(c.hand)
		sh.used, sh.refused, sh.overflow = c.used, c.refused, c.overflow
	}
}

func (s *NonceStore) unlock(sh *nonceShard) {
	if c := sh.shm; c != nil {
		c.n, c.hand = int64(sh.t.n), int64(sh.t.hand)
		c.used, c.refused, c.overflow = sh.used, sh.refused, sh.overflow
		s.shm.unlock(c)
	}
	sh.mu.Unlock()
}

// queueing says whether a fresh nonce must be queued for the other nodes: some
// process that gossips it has peers.
func (s *NonceStore) queueing() bool {
	if s.shm != nil {
		return s.shm.hdr.wanted.Load() > 0
	}
	return !s.alone.Load()
}

// enqueue queues d for the next flush; the shard is locked.
func (s *NonceStore) enqueue(sh *nonceShard, d *digest) {
	c := sh.shm
	if c == nil {
		sh.pending = append(sh.pending, d[:]...)
		return
	}
	if c.pendingN >= shmPendingCap {
		c.dropped++ // no gossiping process has drained it for a while
		return
	}
	copy(sh.q[int(c.pendingN)*digestLen:], d[:])
	c.pendingN++
}

// drain appends the shard's queued digests to dst and empties the queue; the shard
// is locked.
func (s *NonceStore) drain(sh *nonceShard, dst []byte) []byte {
	c := sh.shm
	if c == nil {
		dst = append(dst, sh.pending...)
		sh.pending = sh.pending[:0]
		return dst
	}
	dst = append(dst, sh.q[:int(c.pendingN)*digestLen]...)
	c.pendingN = 0
	return dst
}

// setAlone records whether this store has anyone to send nonces to; aloneMu is held.
// A store of a shared file counts itself in the file's wanted while it has.
func (s *NonceStore) setAlone(alone bool) {
	was := s.alone.Swap(alone)
	if s.shm != nil && s.cfg.Transport != nil && was != alone {
		if alone {
			s.shm.hdr.wanted.Add(-1)
		} else {
			s.shm.hdr.wanted.Add(1)
		}
	}
}

// insertLocked adds d unless a live entry exists. Expiry is swept a few slots per
// insert, so it costs O(1) amortised.
func (s *NonceStore) insertLocked(sh *nonceShard, d digest, exp, now int64) (fresh, full bool) {
	return sh.t.use(&d, expSec(exp), sec(now), s.maxSlots)
}

// sec is unix ns as whole unix seconds, rounded down and kept within [1, 2³²-1] (0
// marks an empty slot; uint32 seconds last until 2106): an entry stays live while its
// expiry second is after it.
func sec(ns int64) uint32 {
	return uint32(min(max(ns/int64(time.Second), 1), 1<<32-1))
}

// expSec is sec rounded up: a nonce is remembered at least as long as asked.
func expSec(ns int64) uint32 { return sec(ns + int64(time.Second) - 1) }

// Seen reports whether nonce is known as used at now, without using it. Safe for
// concurrent use; for admin views and tests.
func (s *NonceStore) Seen(nonce []byte, now time.Time) bool {
	d := nonceDigest(nonce)
	sh := &s.shards[d[0]%nonceShards]
	s.lock(sh)
	defer s.unlock(sh)
	i := sh.t.find(&d)
	return i >= 0 && sh.t.slots[i].exp > sec(now.UnixNano())
}

// Len returns how many nonces the store remembers.
func (s *NonceStore) Len() int {
	return int(s.sum(func(sh *nonceShard) uint64 { return uint64(sh.t.n) })())
}

// sum returns a metric function adding f over the shards.
func (s *NonceStore) sum(f func(*nonceShard) uint64) func() float64 {
	return func() float64 {
		var n uint64
		for i := range s.shards {
			sh := &s.shards[i]
			s.lock(sh)
			n += f(sh)
			s.unlock(sh)
		}
		return float64(n)
	}
}

// Start runs the loop that sends used nonces to the other nodes. Close stops it.
func (s *NonceStore) Start() { s.startOnce.Do(func() { go s.loop() }) }

// Close stops the send loop after a last flush, and waits for it. Idempotent.
func (s *NonceStore) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		started := true
		s.startOnce.Do(func() { started = false })
		if started {
			<-s.done
		}
		s.aloneMu.Lock()
		s.setAlone(true) // out of the shared file's wanted
		s.aloneMu.Unlock()
	})
}

// markDirty tells the flush loop there is something to send, waking it if it sleeps.
// Cheap when repeated: a load of a flag that changes once per flush.
func (s *NonceStore) markDirty() {
	if !s.dirty.Load() {
		s.dirty.Store(true)
	}
	s.pace.poke()
}

func (s *NonceStore) loop() {
	defer close(s.done)
	s.pace.run(s.cfg.FlushInterval, s.stop, s.flush, s.dirty.Load)
}

// flush sends what was used since the last flush as a new batch, sends again the
// batches some live member has not acknowledged after resendAfter, and drops those
// every live member has. Batches are split to fit a packet.
//
// It reports whether there was anything to do: then the loop keeps its pace.
func (s *NonceStore) flush() (busy bool) {
	s.dirty.Store(false)
	var members []string
	if s.cfg.Transport != nil {
		members = s.cfg.Transport.MemberNames()
	}
	listed := slices.ContainsFunc(members, func(m string) bool { return m != s.name })
	if s.cfg.Transport == nil {
		// Nobody to send to: such a store is alone and queues nothing, and a shared
		// file's queues are for a store that has a transport.
		return false
	}
	s.aloneMu.Lock()
	alone := !listed && time.Since(s.peerSeen) > aloneAfter
	s.setAlone(alone)
	s.aloneMu.Unlock()
	var fresh []byte
	for i := range s.shards {
		sh := &s.shards[i]
		s.lock(sh)
		fresh = s.drain(sh, fresh)
		s.unlock(sh)
	}
	now := time.Now()
	const per = (maxPacket - 200) / digestLen * digestLen // room for the header
	for len(fresh) > 0 {
		n := min(len(fresh), per)
		s.seq++
		s.unacked = append(s.unacked, nonceBatch{seq: s.seq, digests: fresh[:n:n]})
		fresh = fresh[n:]
	}
	// The lowest acknowledgement among live members.
	self := s.name
	minAck := s.seq
	s.ackMu.Lock()
	for _, m := range members {
		if m != self {
			minAck = min(minAck, s.acked[m])
		}
	}
	s.ackMu.Unlock()
	if !listed && !alone {
		// A peer has shown itself (a join's state exchange) but is not listed yet:
		// keep every batch for it until it is listed and acknowledges them.
		minAck = 0
	}
	kept := s.unacked[:0]
	for _, b := range s.unacked {
		if b.seq > minAck {
			kept = append(kept, b)
		}
	}
	clear(s.unacked[len(kept):])
	s.unacked = kept
	if len(s.unacked) > maxUnacked {
		s.unacked = append(s.unacked[:0], s.unacked[len(s.unacked)-maxUnacked:]...)
	}
	sent := false
	for i := range s.unacked {
		b := &s.unacked[i]
		if !b.lastSent.IsZero() && now.Sub(b.lastSent) < resendAfter {
			continue
		}
		if b.lastSent.IsZero() {
			b.firstSent = now
		}
		b.lastSent = now
		s.send(b.seq, b.digests)
		sent = true
	}
	s.introduceToSilent(members, now)
	s.ackMu.Lock()
	ackNew := s.ackNew
	s.ackMu.Unlock()
	if !sent && ackNew {
		s.send(0, nil) // acknowledgements only
	}
	// Other processes of a shared file queue nonces without waking this loop: while
	// there are peers to send them to, it keeps its pace.
	polling := s.shm != nil && !alone
	return len(fresh) > 0 || len(s.unacked) > 0 || sent || ackNew || polling
}

// introduceToSilent asks the live members that have not acknowledged a batch first
// sent silentAfter ago to exchange state with this node directly (see Introducer),
// then again at doubling gaps while they stay silent. One that missed this node's join
// (gossip is lossy) sends it nothing, acknowledgements included, and the nonces used
// on it stay unknown here, the periodic state exchange carrying none: replays of them
// would pass. Flusher only.
func (s *NonceStore) introduceToSilent(members []string, now time.Time) {
	intro, ok := s.cfg.Transport.(Introducer)
	if !ok {
		return
	}
	if len(s.unacked) == 0 { // every member has every batch: none is silent
		clear(s.silent)
		return
	}
	if s.unacked[0].firstSent.IsZero() || now.Sub(s.unacked[0].firstSent) < silentAfter {
		return
	}
	oldest := s.unacked[0].seq
	var due []string // introduced after ackMu is let go: onMsg waits on it
	s.ackMu.Lock()
	for _, m := range members {
		if m == s.name {
			continue
		}
		if s.acked[m] >= oldest {
			s.silent.heard(m)
			continue
		}
		if s.silent.due(m, now, 0) {
			due = append(due, m)
		}
	}
	s.ackMu.Unlock()
	s.silent.keepOnly(members)
	for _, m := range due {
		intro.Introduce(m)
	}
}

// send writes one message: version, name, incarnation, sequence (0: none), the
// cumulative acknowledgement for peers, then 16-byte digests.
//
// The acknowledgements take the room the digests leave in a packet, the ones owed
// first (as the limiter's batches, see countsHeader): naming every peer in every
// message pushed a large cluster's messages past a UDP packet, and each then went to
// each peer over a TCP connection of its own. ackNew stays set while one is owed, so
// the next flush sends it.
func (s *NonceStore) send(seq int64, digests []byte) {
	msg := make([]byte, 0, maxPacket+2*binary.MaxVarintLen64)
	msg = append(msg, wireVersion)
	msg = appendString(msg, s.name)
	msg = binary.LittleEndian.AppendUint64(msg, s.inc)
	msg = binary.AppendUvarint(msg, uint64(seq))
	room := maxPacket - len(msg) - binary.MaxVarintLen64 - len(digests)
	var acks []byte
	n := 0
	s.ackMu.Lock()
	for _, owed := range [2]bool{true, false} {
		for name, r := range s.recv {
			if r.cum > r.ackSent != owed {
				continue
			}
			// A lone owed acknowledgement goes whatever its size (see countsHeader).
			if len(acks)+len(name)+8+2*binary.MaxVarintLen64 > room && !(owed && n == 0) {
				continue
			}
			acks = appendString(acks, name)
			acks = binary.LittleEndian.AppendUint64(acks, r.inc)
			acks = binary.AppendUvarint(acks, uint64(r.cum))
			r.ackSent = r.cum
			n++
		}
	}
	s.ackNew = false
	for _, r := range s.recv {
		if r.cum > r.ackSent {
			s.ackNew = true
			break
		}
	}
	s.ackMu.Unlock()
	msg = binary.AppendUvarint(msg, uint64(n))
	msg = append(msg, acks...)
	msg = append(msg, digests...)
	_ = s.cfg.Transport.SendToAll(s.cfg.Channel, msg)
}

// onMsg records nonces another node used, and its acknowledgements of ours. Nonces
// are not sent on: every node hears from the node that saw the nonce.
func (s *NonceStore) onMsg(b []byte) {
	if len(b) < 1 || b[0] != wireVersion {
		return
	}
	from, b, ok := readString(b[1:])
	if !ok || len(b) < 8 {
		return
	}
	inc := binary.LittleEndian.Uint64(b)
	seq, b, ok := readUvarint(b[8:])
	if !ok {
		return
	}
	n, b, ok := readUvarint(b)
	if !ok {
		return
	}
	var ack int64
	haveAck := false
	for range n {
		var peer string
		var pinc uint64
		var v int64
		if peer, b, ok = readString(b); !ok || len(b) < 8 {
			return
		}
		pinc = binary.LittleEndian.Uint64(b)
		if v, b, ok = readUvarint(b[8:]); !ok {
			return
		}
		if peer == s.name && pinc == s.inc {
			ack, haveAck = v, true
		}
	}
	s.sawPeer()
	now := s.cfg.Clock().UnixNano()
	exp := now + int64(s.cfg.TTL)
	for ; len(b) >= digestLen; b = b[digestLen:] {
		s.remember(digest(b[:digestLen]), exp, now)
	}
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	if haveAck {
		s.acked[from] = max(s.acked[from], ack)
	}
	if seq == 0 {
		return
	}
	r := s.recv[from]
	if r == nil || r.inc != inc {
		r = &recvState{inc: inc, ooo: map[int64]bool{}}
		s.recv[from] = r
	}
	if seq > r.cum {
		r.ooo[seq] = true
		if len(r.ooo) > 2*maxUnacked { // the sender gave up on a gap: skip it
			lo := seq
			for k := range r.ooo {
				lo = min(lo, k)
			}
			r.cum = lo - 1
		}
		for r.ooo[r.cum+1] {
			delete(r.ooo, r.cum+1)
			r.cum++
		}
	} else {
		// Sent again: our acknowledgement of it was lost. It is owed once more.
		r.ackSent = min(r.ackSent, seq-1)
	}
	s.ackNew = true
	s.markDirty() // the acknowledgement goes out with the next flush
}

// sawPeer notes a sign of another node: used nonces are queued for it from now on.
func (s *NonceStore) sawPeer() {
	s.aloneMu.Lock()
	s.peerSeen = time.Now()
	s.setAlone(false)
	s.aloneMu.Unlock()
}

func (s *NonceStore) remember(d digest, exp, now int64) {
	sh := &s.shards[d[0]%nonceShards]
	s.lock(sh)
	s.insertLocked(sh, d, exp, now)
	s.unlock(sh)
}

// localState sends every live nonce with its expiry to a joining node, so it refuses
// replays of nonces used before it joined.
func (s *NonceStore) localState(join bool) []byte {
	if !join {
		return nil // nonces are not resynchronised periodically: each is sent 2×
	}
	s.sawPeer() // before the snapshot: see Use
	now := s.cfg.Clock().UnixNano()
	nowSec := sec(now)
	// Sized once from the shards' counts (expired entries included, so at most a
	// little over): growing it by appends copied and faulted in the state several
	// times over, 7.5 s for 20 million nonces, where memberlist gives the whole
	// exchange 2 s.
	size := 1
	for i := range s.shards {
		sh := &s.shards[i]
		s.lock(sh)
		size += sh.t.n * (digestLen + binary.MaxVarintLen64)
		s.unlock(sh)
	}
	b := make([]byte, 1, size)
	b[0] = wireVersion
	for i := range s.shards {
		sh := &s.shards[i]
		s.lock(sh)
		for k := range sh.t.slots {
			e := &sh.t.slots[k]
			if e.exp > nowSec {
				b = append(b, e.d[:]...)
				b = binary.AppendUvarint(b, uint64(int64(e.exp)*int64(time.Second)-now))
			}
		}
		s.unlock(sh)
	}
	return b
}

func (s *NonceStore) mergeState(b []byte, join bool) {
	if len(b) < 1 || b[0] != wireVersion {
		return
	}
	s.sawPeer()
	now := s.cfg.Clock().UnixNano()
	for b = b[1:]; len(b) > digestLen; {
		d := digest(b[:digestLen])
		left, n := binary.Uvarint(b[digestLen:])
		if n <= 0 {
			return
		}
		b = b[digestLen+n:]
		s.remember(d, now+int64(left), now)
	}
}
