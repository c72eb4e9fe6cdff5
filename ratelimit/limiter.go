package ratelimit

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Limiter.
type Config struct {
	// Transport reaches the other nodes; nil runs the limiter alone.
	Transport Transport
	// Channel is the Transport channel for counts (default ChannelCounts).
	Channel byte
	// Clock returns the current time for the limiter's own loops (flush, expiry);
	// default time.Now. Allow takes its time as an argument.
	Clock func() time.Time
	// FlushInterval is how often changed counts are sent and exhausted budgets are
	// refilled (default 5ms). It bounds the message rate: one batch per interval.
	FlushInterval time.Duration
	// Registerer receives the limiter's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Limiter counts calls per key and window, shares its counts with the other nodes as
// a G-counter, and decides whether a call is within its quota. Create it with New,
// then Start it; all methods are safe for concurrent use.
type Limiter struct {
	cfg      Config
	nodeID   uint64 // random per process: a restarted node never reuses old counts
	policies atomic.Pointer[map[string]*compiledPolicy]
	shards   [numShards]shard
	dirty    atomic.Pointer[Counter] // Treiber stack of counters touched since last flush
	liveN    atomic.Int64            // live members, from the last flush
	selfIdx  atomic.Int64            // this node's position among them
	tick     atomic.Int64            // flush count; a clock for "quiet"
	keys     atomic.Int64
	m        *metrics

	// Acknowledgements: every batch carries a sequence number and, per peer, the
	// highest sequence received from it. minAck is the lowest of our sequences that
	// every live peer has acknowledged: all our counts sent up to it are known to all.
	name    string
	seq     atomic.Int64 // our last batch's sequence (flusher writes)
	minAck  atomic.Int64
	peersMu sync.Mutex
	peers   map[string]*peerState
	liveIDs atomic.Pointer[map[uint64]bool] // node ids of live peers

	held     map[*Counter]*holdState // flusher-only: counters with a budget left
	silent   introductions           // flusher-only: live members not heard from
	ackOwed  atomic.Bool             // a peer's entries arrived since our last batch
	lastSend time.Time               // flusher-only

	startOnce, closeOnce sync.Once
	stop, done           chan struct{}
	lastSweep            time.Time
	out                  []byte // flusher-only send buffer
	acks                 []byte // flusher-only: a batch's acknowledgements

	// pace lets the flush loop sleep while a lone node has nothing to flush;
	// markDirty pushes onto dirty, then pokes it.
	pace flushLoop
}

const numShards = 256

type shard struct {
	mu sync.RWMutex
	m  map[uint64]*Counter
	// index holds m's counters for lookup, which takes no lock: every request
	// resolves a counter per quota it counts against, and a read lock's two atomic
	// adds per lookup made the shard's lock word bounce between the cores that
	// serve requests. Changed under mu.
	index atomic.Pointer[counterIndex]
	_     [24]byte // keep neighbouring shards' locks off one cache line
}

// counterIndex is a shard's counters in open addressing, for lookup without the
// shard's lock. Writers (under the lock) add a counter to a free slot, or build a
// new index when half the slots are used and after a sweep deleted counters. A
// lookup on an index just replaced may find a counter the sweep deleted, as one
// holding the old read lock could have, and counts into it once; one that misses a
// counter just added finds it in create, under the lock.
type counterIndex struct {
	slots []atomic.Pointer[Counter]
	used  int // under the shard's lock
}

// minIndexSlots is an index's first size (a power of two).
const minIndexSlots = 8

func newCounterIndex(m map[uint64]*Counter) *counterIndex {
	size := minIndexSlots
	for size < 2*(len(m)+1) {
		size *= 2
	}
	ix := &counterIndex{slots: make([]atomic.Pointer[Counter], size)}
	for _, c := range m {
		ix.add(c)
	}
	return ix
}

// home is where key's probe starts: bits above those that chose the shard.
func (ix *counterIndex) home(key uint64) uint64 {
	return (key / numShards) & uint64(len(ix.slots)-1)
}

func (ix *counterIndex) find(key uint64) *Counter {
	mask := uint64(len(ix.slots) - 1)
	// At most half the slots are used, so the probe meets an empty one.
	for i := ix.home(key); ; i = (i + 1) & mask {
		c := ix.slots[i].Load()
		if c == nil || c.key == key {
			return c
		}
	}
}

// add puts c in the first free slot of its probe; the shard is locked and c is new.
func (ix *counterIndex) add(c *Counter) {
	mask := uint64(len(ix.slots) - 1)
	i := ix.home(c.key)
	for ix.slots[i].Load() != nil {
		i = (i + 1) & mask
	}
	ix.slots[i].Store(c)
	ix.used++
}

// indexAdd adds c, new in s.m, to s's index; s is locked.
func (s *shard) indexAdd(c *Counter) {
	if ix := s.index.Load(); (ix.used+1)*2 <= len(ix.slots) {
		ix.add(c)
		return
	}
	s.index.Store(newCounterIndex(s.m)) // m has c already
}

// Counter is the state of one quota key: a policy, a dimension and a subject (an API,
// app or user). A *Counter is a handle: resolve it once (Handle) and keep it for as
// long as the config it came from; it stays valid across windows.
type Counter struct {
	cur    atomic.Pointer[slot]
	next   atomic.Pointer[Counter] // dirty-list link
	dirtyF atomic.Bool
	pinned atomic.Bool // held by a compiled route: never expired
	limit  atomic.Int64
	info   atomic.Pointer[keyInfo]
	key    uint64
	win    Window
	mu     sync.Mutex // merges and window rolls; never taken by Allow in a window
}

type keyInfo struct {
	policy string
	dim    Dimension
	stats  *dimStats
}

// slot is a counter's state for one window.
type slot struct {
	idx            int64 // window index
	budget         atomic.Int64
	local          atomic.Int64 // calls this node admitted
	throttled      atomic.Int64
	remote         atomic.Int64 // sum of the other nodes' counts
	lastRemoteTick atomic.Int64
	refillSeq      atomic.Int64 // our batch that carried the count at the last refill
	// lazy marks a window this node learned from a peer before any call of its own:
	// it holds no budget (so it reserves nothing in the others' views) until its first
	// call takes one (wake).
	lazy        atomic.Bool
	ceiling     atomic.Int64 // count this node may reach on its budget (reserved)
	peerStarved atomic.Int64 // tick when a peer last said it wants budget

	peers []peerCount // guarded by Counter.mu

	prev                 atomic.Pointer[slot] // previous window, for its last metrics
	sent, repAdm, repThr int64                // flusher-only
	sentCeil             int64                // flusher-only
	sentTick             int64                // flusher-only: flush that last sent the entry
	overSeen             int64                // flusher-only
}

type holdState struct {
	s         *slot
	lastLocal int64
	idle      int
}

type peerState struct {
	id       uint64
	theirSeq int64     // highest sequence received from the peer
	ackSent  int64     // the theirSeq our last batch acknowledged
	acked    int64     // highest of our sequences the peer says it received
	heard    time.Time // when its last batch came
}

// peerCount is one peer's state for a key and window: its count (merged by max) and
// its ceiling, the count it may reach on the budget it holds (latest by sequence: a
// peer lowers it when it releases an unused budget).
type peerCount struct {
	id      uint64
	count   int64
	ceil    int64
	ceilSeq int64
}

// New creates a limiter. Call SetPolicies, then Start.
func New(cfg Config) (*Limiter, error) {
	if cfg.Channel == 0 {
		cfg.Channel = ChannelCounts
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 5 * time.Millisecond
	}
	l := &Limiter{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{}), pace: newFlushLoop(), peers: map[string]*peerState{},
		held: map[*Counter]*holdState{}, silent: introductions{}}
	noLive := map[uint64]bool{}
	l.liveIDs.Store(&noLive)
	var b [8]byte
	_, _ = rand.Read(b[:])
	l.nodeID = binary.LittleEndian.Uint64(b[:]) | 1
	for i := range l.shards {
		l.shards[i].m = map[uint64]*Counter{}
		l.shards[i].index.Store(newCounterIndex(nil))
	}
	empty := map[string]*compiledPolicy{}
	l.policies.Store(&empty)
	l.liveN.Store(1)
	l.m = newMetrics()
	if cfg.Registerer != nil {
		if err := l.m.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	if cfg.Transport != nil {
		l.name = cfg.Transport.LocalName()
		// A million keys take half a second to collect: built on request at a join.
		if err := registerLarge(cfg.Transport, cfg.Channel, l.onMsg, l.localState, l.mergeState); err != nil {
			return nil, err
		}
		l.refreshMembers()
	}
	return l, nil
}

// Start runs the flush loop. Call it once; Close stops it.
func (l *Limiter) Start() {
	l.startOnce.Do(func() { go l.loop() })
}

// Close stops the flush loop after a last flush, and waits for it. Idempotent.
func (l *Limiter) Close() {
	l.closeOnce.Do(func() {
		close(l.stop)
		started := true
		l.startOnce.Do(func() { started = false })
		if started {
			<-l.done
		}
	})
}

// SetPolicies replaces the policy set (one config version). Every policy must be
// valid, or nothing changes. Limits of existing handles change when they are resolved
// again with Handle, as a new routing table does.
func (l *Limiter) SetPolicies(ps []Policy) error {
	m := make(map[string]*compiledPolicy, len(ps))
	var errs []error
	for i := range ps {
		if err := ps[i].Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		m[ps[i].Name] = compile(ps[i])
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.policies.Store(&m)
	return nil
}

// Handle returns the counter of (policy, dimension, subject), creating it on first
// use, or nil when the policy is unknown or leaves that dimension unlimited (Allow
// admits a nil counter). It does not allocate when the counter exists, takes only a
// read lock of one of 256 shards, and is safe for concurrent use, so it serves both
// routes compiled once per config (pin=true: never expired while held) and keys known
// only at request time (the app after auth; pin=false).
func (l *Limiter) Handle(policy string, dim Dimension, subject string, pin bool) *Counter {
	return l.HandleScoped(policy, dim, subject, "", pin)
}

// HandleScoped is Handle for a subject counted separately in each scope: an app's
// calls to each API bound to a policy, say (scope = the API). The subject alone picks
// the limit (a special for that app or user applies in every scope); subject and scope
// together name the counter. Like Handle, it keeps neither string and does not
// allocate when the counter exists.
func (l *Limiter) HandleScoped(policy string, dim Dimension, subject, scope string, pin bool) *Counter {
	p := (*l.policies.Load())[policy]
	if p == nil {
		return nil
	}
	lim := p.limit(dim, subject)
	if lim <= 0 {
		return nil
	}
	key := keyHash(policy, p.Window, dim, subject, scope)
	c := l.lookup(key)
	if c == nil {
		c = l.create(key, p.Window)
	}
	if pin && !c.pinned.Load() {
		c.pinned.Store(true)
	}
	if c.limit.Load() != lim {
		l.setLimit(c, lim)
	}
	if inf := c.info.Load(); inf == nil || inf.policy != policy {
		c.info.Store(&keyInfo{policy: policy, dim: dim})
	}
	return c
}

// keyHash names a key the same way on every node (FNV-1a, 64 bits). With a million
// keys the chance that two collide is about 3·10⁻⁸; colliding keys would share a count.
func keyHash(policy string, w Window, d Dimension, subject, scope string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for i := 0; i < len(policy); i++ {
		h = (h ^ uint64(policy[i])) * prime
	}
	h = (h ^ 0xff) * prime
	h = (h ^ uint64(w)) * prime
	h = (h ^ uint64(d)) * prime
	for i := 0; i < len(subject); i++ {
		h = (h ^ uint64(subject[i])) * prime
	}
	if scope != "" {
		// The separator keeps ("ab", "c") and ("a", "bc") apart; unscoped keys hash as
		// they always did.
		h = (h ^ 0xfe) * prime
		for i := 0; i < len(scope); i++ {
			h = (h ^ uint64(scope[i])) * prime
		}
	}
	return h
}

func (l *Limiter) lookup(key uint64) *Counter {
	return l.shards[key%numShards].index.Load().find(key)
}

func (l *Limiter) create(key uint64, w Window) *Counter {
	s := &l.shards[key%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.m[key]; c != nil {
		return c
	}
	c := &Counter{key: key, win: w}
	s.m[key] = c
	s.indexAdd(c)
	l.keys.Add(1)
	return c
}

// retakeAfterWake returns the unit a failed decrement took, wakes a lazy window and
// tries the decrement again.
func (l *Limiter) retakeAfterWake(c *Counter, s *slot) bool {
	s.budget.Add(1)
	l.wake(c, s)
	return s.budget.Add(-1) >= 0
}

func (l *Limiter) setLimit(c *Counter, lim int64) {
	c.mu.Lock()
	c.limit.Store(lim)
	if s := c.cur.Load(); s != nil && !s.lazy.Load() {
		sh := l.share(c, s, false)
		s.budget.Store(sh)
		s.ceiling.Store(s.local.Load() + sh)
	}
	c.mu.Unlock()
}

// wake gives a lazy window its first budget, on its first call: this node's part of
// what its view leaves free. No acknowledgement is needed first: the node held no
// ceiling the others must know of. It reports whether it took any.
func (l *Limiter) wake(c *Counter, s *slot) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.lazy.CompareAndSwap(true, false) {
		return s.budget.Load() > 0
	}
	sh := l.share(c, s, false)
	s.ceiling.Store(s.local.Load() + sh)
	s.budget.Add(sh)
	l.markDirty(c) // the others must learn the new ceiling
	return sh > 0
}

// Allow decides one call against counter c at time now, and counts it if admitted.
// A refused call gets how long to wait: until the window ends when the quota is spent,
// or one flush interval when this node has spent its share and waits for fresh counts.
// It never blocks, takes no lock (only atomics on c), does not allocate (beyond one
// small object per counter per window), and is safe for concurrent use. A nil c is
// unlimited.
func (l *Limiter) Allow(c *Counter, now time.Time) (ok bool, retryAfter time.Duration) {
	if c == nil {
		return true, 0
	}
	s := l.slotAt(c, now.Unix())
	if s.budget.Add(-1) < 0 && !(s.lazy.Load() && l.retakeAfterWake(c, s)) {
		s.throttled.Add(1)
		l.markDirty(c)
		return false, l.retryAfter(c, s, now)
	}
	s.local.Add(1)
	l.markDirty(c)
	return true, 0
}

// AllowAll admits a call only if every non-nil counter in cs has room, and then counts
// it in all of them (a call refused by the app quota does not use the API quota).
// refused is the index of the first counter that refused, or -1. Same guarantees as
// Allow; cs is not kept.
func (l *Limiter) AllowAll(cs []*Counter, now time.Time) (ok bool, refused int, retryAfter time.Duration) {
	t := now.Unix()
	for i, c := range cs {
		if c == nil {
			continue
		}
		s := l.slotAt(c, t)
		if s.budget.Add(-1) < 0 && !(s.lazy.Load() && l.retakeAfterWake(c, s)) {
			s.budget.Add(1)
			for _, p := range cs[:i] { // give back what we reserved
				if p != nil {
					l.slotAt(p, t).budget.Add(1)
				}
			}
			s.throttled.Add(1)
			l.markDirty(c)
			return false, i, l.retryAfter(c, s, now)
		}
	}
	for _, c := range cs {
		if c != nil {
			l.slotAt(c, t).local.Add(1)
			l.markDirty(c)
		}
	}
	return true, -1, 0
}

func (l *Limiter) retryAfter(c *Counter, s *slot, now time.Time) time.Duration {
	if s.local.Load()+s.remote.Load() < c.limit.Load() {
		return l.cfg.FlushInterval
	}
	end := (s.idx + 1) * c.win.Seconds() * int64(time.Second)
	return time.Duration(end - now.UnixNano())
}

// slotAt returns c's slot for unix second t, rolling to a new window when t is past
// the current one. A time before the current slot (a clock behind a peer that already
// rolled) counts in the current slot.
func (l *Limiter) slotAt(c *Counter, t int64) *slot {
	idx := c.win.index(t)
	if s := c.cur.Load(); s != nil && s.idx >= idx {
		return s
	}
	c.mu.Lock()
	s := l.rollLocked(c, idx, true)
	c.mu.Unlock()
	return s
}

// rollLocked opens window idx on c. demand says a call of this node's opens it; a
// window learned from a peer's count opens lazy, with no budget.
func (l *Limiter) rollLocked(c *Counter, idx int64, demand bool) *slot {
	old := c.cur.Load()
	if old != nil && old.idx >= idx {
		return old
	}
	s := &slot{idx: idx}
	s.prev.Store(old)
	s.lastRemoteTick.Store(-1 << 62)
	// No peer has asked for budget yet: a zero here would read as "starved at tick 0"
	// and make release hand back every budget taken in the limiter's first ticks.
	s.peerStarved.Store(-1 << 62)
	// The first budget of a window needs no acknowledgement (every node starts it
	// from the same zero view); the next refill waits until our next batch is acked.
	s.refillSeq.Store(l.seq.Load() + 1)
	if old != nil {
		old.prev.Store(nil) // keep at most one old window reachable
	}
	if demand {
		sh := l.share(c, s, false)
		s.budget.Store(sh)
		s.ceiling.Store(sh)
	} else {
		s.lazy.Store(true)
	}
	c.cur.Store(s)
	return s
}

// share is how many calls this node may admit on c before it needs a fresh view:
// its part of what remains in the window by its view, split among the live nodes.
// The split is exact (the parts add up to the remainder) so that nodes with the same
// view never spend the same calls; the rank that gets the rounding is rotated by key.
// When the part rounds to zero and no peer has reported on the key for two flushes
// (quiet), the unit sits with a node that is not using it: take one.
func (l *Limiter) share(c *Counter, s *slot, quiet bool) int64 {
	lim := c.limit.Load()
	r := l.avail(c, s)
	if lim <= 0 || r <= 0 {
		return 0
	}
	n := l.liveN.Load()
	if n <= 1 {
		return r
	}
	rank := (l.selfIdx.Load() + int64(c.key%uint64(n))) % n
	q := r / n
	if rank < r%n {
		q++
	}
	if q == 0 && quiet {
		q = 1 // the rounding unit sits with a node that is not spending it
	}
	return q
}

// avail is what this node's view leaves unreserved on c: the limit less its own count
// and, per peer, the larger of its count and its ceiling (a live peer may still spend
// up to its ceiling without telling anyone; a dead one will not). c.mu must be held.
func (l *Limiter) avail(c *Counter, s *slot) int64 {
	live := *l.liveIDs.Load()
	r := c.limit.Load() - s.local.Load()
	for _, p := range s.peers {
		if live[p.id] {
			r -= max(p.count, p.ceil)
		} else {
			r -= p.count
		}
	}
	return r
}

func (l *Limiter) markDirty(c *Counter) {
	if c.dirtyF.Load() || !c.dirtyF.CompareAndSwap(false, true) {
		return
	}
	for {
		h := l.dirty.Load()
		c.next.Store(h)
		if l.dirty.CompareAndSwap(h, c) {
			break
		}
	}
	l.pace.poke()
}

// loop flushes every FlushInterval (see flushLoop). A node with no counter to look at
// and no acknowledgement owed has nothing a flush would do but upkeep and heartbeats,
// so its loop sleeps (up to idleFlush); a peer's entries wake it.
func (l *Limiter) loop() {
	defer close(l.done)
	l.pace.run(l.cfg.FlushInterval, l.stop, l.flush, func() bool { return l.dirty.Load() != nil || l.ackOwed.Load() })
}

// MembersChanged tells the limiter the Transport's members changed: quotas are split
// among them from the next window opened, and the flush loop wakes. A lone limiter's
// loop sleeps (up to 100 ms), and a window opened meanwhile would be split as if it
// were still alone: its first budget the whole quota, none left for the member that
// just came.
func (l *Limiter) MembersChanged() {
	l.refreshMembers()
	l.pace.poke()
}

// refreshMembers reads the live members and what they acknowledged. It returns the
// names, or nil when this node acts alone.
func (l *Limiter) refreshMembers() []string {
	if l.cfg.Transport == nil {
		return nil
	}
	names := l.cfg.Transport.MemberNames()
	self := l.cfg.Transport.LocalName()
	i := slices.Index(names, self)
	if i < 0 { // not in its own list (shutting down): act alone
		l.liveN.Store(1)
		l.selfIdx.Store(0)
		return nil
	}
	l.liveN.Store(int64(len(names)))
	l.selfIdx.Store(int64(i))
	minAck := l.seq.Load()
	live := map[uint64]bool{}
	l.peersMu.Lock()
	for _, name := range names {
		if name == self {
			continue
		}
		a := int64(0)
		if p := l.peers[name]; p != nil {
			a = p.acked
			live[p.id] = true
		}
		minAck = min(minAck, a)
	}
	l.peersMu.Unlock()
	l.liveIDs.Store(&live)
	l.minAck.Store(minAck)
	return names
}

// introduceToSilent asks every live member that has sent nothing for silentAfter to
// exchange state with this node directly (see Introducer), then again at doubling
// gaps while it stays silent. Membership gossip is lossy: a member that missed this
// node's join lists it only at its next periodic state exchange, and until then sends
// it nothing, so every refill here, which waits for its acknowledgement, waits with it
// (seen: ten seconds of refused calls under a 90-call quota's first third). Flusher
// only.
func (l *Limiter) introduceToSilent(names []string, now time.Time) {
	intro, ok := l.cfg.Transport.(Introducer)
	if !ok {
		return
	}
	self := l.name
	var due []string // introduced after peersMu is let go: onMsg waits on it
	l.peersMu.Lock()
	for _, name := range names {
		if name == self {
			continue
		}
		if p := l.peers[name]; p != nil && now.Sub(p.heard) < silentAfter {
			l.silent.heard(name)
			continue
		}
		// Just listed, it may still be starting: the first introduction waits.
		if l.silent.due(name, now, silentAfter) {
			due = append(due, name)
		}
	}
	l.peersMu.Unlock()
	l.silent.keepOnly(names)
	for _, name := range due {
		intro.Introduce(name)
	}
}

// maxPacket keeps a batch inside one UDP packet (see cluster.Gossip).
const maxPacket = 1150

// flush sends the counts that changed since the last flush, refills spent budgets,
// updates metrics, and now and then expires old keys. It runs on the flush loop only.
// It reports whether the next flush may have work: a peer to talk to, or a counter it
// looked at.
func (l *Limiter) flush() (busy bool) {
	tick := l.tick.Add(1)
	now := l.cfg.Clock()
	if names := l.refreshMembers(); len(names) > 1 {
		l.introduceToSilent(names, now)
	}
	minAck := l.minAck.Load()
	head := l.dirty.Swap(nil)
	out := l.countsHeader(l.out[:0])
	hdr := len(out)
	var maxUnsent int64
	var retry []*Counter
	for c := head; c != nil; {
		next := c.next.Load()
		c.next.Store(nil)
		c.dirtyF.Store(false)
		s := c.cur.Load()
		if s == nil {
			c = next
			continue
		}
		starved, resend := false, false
		// Refill only a window this node has called on: an idle node that takes a
		// budget reserves it in every view, and the node doing the calls waits.
		if s.budget.Load() <= 0 && !s.lazy.Load() && (s.local.Load() > 0 || s.throttled.Load() > 0) {
			// Refill only once every live peer has acknowledged the batch that
			// carried our ceiling at the last refill: then every peer reserves for us
			// at least what we may spend (see the bound in doc.go).
			if minAck >= s.refillSeq.Load() {
				quiet := tick-s.lastRemoteTick.Load() >= 2
				c.mu.Lock()
				if s.budget.Load() <= 0 {
					if sh := l.share(c, s, quiet); sh > 0 {
						s.refillSeq.Store(l.seq.Load() + 1) // the next batch carries it
						s.ceiling.Store(s.local.Load() + sh)
						s.budget.Store(sh)
						retry = append(retry, c) // send the new ceiling next flush
					} else if c.limit.Load() > s.local.Load()+s.remote.Load() {
						starved = true // the rest is reserved by peers: ask them
					}
				}
				c.mu.Unlock()
			} else if c.limit.Load() > s.local.Load()+s.remote.Load() {
				retry = append(retry, c)
				// Acks answer batches with entries only. Waiting this long, the
				// entry or its ack was lost: send the entry again.
				resend = tick-s.sentTick >= resendAfterTicks
			}
		}
		if b := s.budget.Load(); b > 0 {
			if h := l.held[c]; h == nil || h.s != s {
				l.held[c] = &holdState{s: s, lastLocal: s.local.Load()}
			}
		} else if s.ceiling.Load() > s.local.Load() {
			s.ceiling.Store(s.local.Load()) // spent (or refunded): nothing held
		}
		local, ceil := s.local.Load(), s.ceiling.Load()
		if local != s.sent || ceil != s.sentCeil || starved || resend {
			if u := local - s.sent; u > maxUnsent {
				maxUnsent = u
			}
			out = appendEntry(out, c.key, c.win, s.idx, local, ceil, starved)
			s.sent, s.sentCeil, s.sentTick = local, ceil, tick
			if len(out) >= maxPacket {
				l.send(out, now)
				out = l.countsHeader(out[:0])
				hdr = len(out)
			}
		}
		l.report(c, s)
		c = next
	}
	out, hdr = l.release(tick, now, out, hdr)
	// A batch goes out with entries; without, when a peer's entries wait for our
	// acknowledgement, and as a heartbeat (peers that hear nothing for a while
	// introduce themselves, see introduceToSilent). Acknowledgements answer entries
	// only, so two idle nodes do not keep each other awake.
	owed := l.ackOwed.Swap(false)
	clustered := l.cfg.Transport != nil && l.liveN.Load() > 1
	if len(out) > hdr || owed || clustered && now.Sub(l.lastSend) >= heartbeat {
		l.send(out, now)
	}
	if l.acksOwed() { // more than one batch's worth: the next flush sends the rest
		l.ackOwed.Store(true)
	}
	l.out = out[:0]
	for _, c := range retry { // look again next flush, when the acks may be in
		l.markDirty(c)
	}
	l.m.estError.Set(float64(maxUnsent))
	l.m.keys.Set(float64(l.keys.Load()))
	if now.Sub(l.lastSweep) >= time.Second {
		l.lastSweep = now
		l.sweep(now)
	}
	// Held budgets matter only to peers that may starve, and a starving peer's
	// entries wake this loop; the slow idle flushes clear the rest when their windows
	// end, and send the heartbeats.
	return head != nil || len(retry) > 0 || l.ackOwed.Load()
}

// heartbeat is how often a node in a cluster sends a batch when it has nothing to
// say: well under silentAfter, so a member that lists us is never taken for one that
// missed our join.
const heartbeat = 250 * time.Millisecond

// resendAfterTicks is how many flushes a node waiting for acknowledgements lets pass
// before it sends the entry they would acknowledge again.
const resendAfterTicks = 4

func (l *Limiter) send(b []byte, now time.Time) {
	if l.cfg.Transport != nil {
		l.lastSend = now
		_ = l.cfg.Transport.SendToAll(l.cfg.Channel, b)
	}
}

// countsHeader starts a batch: version, node id, name, sequence, and for peers the
// highest sequence received from each. Each batch takes the next sequence number.
//
// The acknowledgements fit in ackBudget, the ones owed first (a peer's entries came
// since we last acknowledged it), then others as room is left. Naming every peer in
// every batch made the batches of a large cluster outgrow a UDP packet (24 members
// with 60-character names: 1.4 KB of names), and each such batch then went to each
// peer over a TCP connection of its own, every flush. A peer a batch leaves out gets
// its acknowledgement in the next: flush keeps ackOwed set while one is owed.
func (l *Limiter) countsHeader(b []byte) []byte {
	b = append(b, wireVersion)
	b = binary.LittleEndian.AppendUint64(b, l.nodeID)
	b = appendString(b, l.name)
	b = binary.AppendUvarint(b, uint64(l.seq.Add(1)))
	acks, n := l.acks[:0], 0
	l.peersMu.Lock()
	for _, owed := range [2]bool{true, false} {
		for name, p := range l.peers {
			if p.theirSeq > p.ackSent != owed {
				continue
			}
			// A lone owed acknowledgement goes whatever its size: a peer with a name
			// too long for the budget must still be acknowledged.
			if len(acks)+len(name)+2*binary.MaxVarintLen64 > ackBudget && !(owed && n == 0) {
				continue
			}
			acks = appendString(acks, name)
			acks = binary.AppendUvarint(acks, uint64(p.theirSeq))
			p.ackSent = p.theirSeq
			n++
		}
	}
	l.peersMu.Unlock()
	l.acks = acks
	b = binary.AppendUvarint(b, uint64(n))
	return append(b, acks...)
}

// ackBudget bounds a batch's acknowledgements: with the rest of the header (~80
// bytes) it leaves more than half of maxPacket for entries.
const ackBudget = 480

// acksOwed reports whether a peer's entries came since the last acknowledgement sent.
func (l *Limiter) acksOwed() bool {
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	for _, p := range l.peers {
		if p.theirSeq > p.ackSent {
			return true
		}
	}
	return false
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func readString(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}

func readUvarint(b []byte) (int64, []byte, bool) {
	v, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, false
	}
	return int64(v), b[k:], true
}

const wireVersion = 1

// release gives back budgets that sit unused while a peer is starved for the key: a
// budget is reserved in every peer's view, so an idle holder would block them until
// the window ends. It appends the lowered ceilings to the batch (hdr long without
// entries), sending it when full, and returns the batch and its header's length.
func (l *Limiter) release(tick int64, now time.Time, out []byte, hdr int) ([]byte, int) {
	for c, h := range l.held {
		s := c.cur.Load()
		if s != h.s || s.budget.Load() <= 0 || s.idx < c.win.index(now.Unix()) {
			delete(l.held, c)
			continue
		}
		local := s.local.Load()
		if local != h.lastLocal {
			h.lastLocal, h.idle = local, 0
			continue
		}
		h.idle++
		if tick-s.peerStarved.Load() > 2 {
			continue
		}
		c.mu.Lock()
		if b := s.budget.Load(); b > 0 && s.budget.CompareAndSwap(b, 0) {
			s.ceiling.Store(s.local.Load())
		}
		c.mu.Unlock()
		delete(l.held, c)
		local, ceil := s.local.Load(), s.ceiling.Load()
		out = appendEntry(out, c.key, c.win, s.idx, local, ceil, false)
		s.sent, s.sentCeil = local, ceil
		if len(out) >= maxPacket {
			l.send(out, now)
			out = l.countsHeader(out[:0])
			hdr = len(out)
		}
	}
	return out, hdr
}

// appendEntry writes one key's state: key, window, window index, count, ceiling, and
// a flag byte (1: this node is refusing calls for want of budget while the quota has
// room).
func appendEntry(b []byte, key uint64, w Window, idx, count, ceil int64, starved bool) []byte {
	b = binary.LittleEndian.AppendUint64(b, key)
	b = append(b, byte(w))
	b = binary.AppendUvarint(b, uint64(idx))
	b = binary.AppendUvarint(b, uint64(count))
	b = binary.AppendUvarint(b, uint64(ceil))
	var f byte
	if starved {
		f = 1
	}
	return append(b, f)
}

// report moves the counter's admitted, throttled and over-admitted calls into the
// metrics (flusher only, so the hot path never touches a shared metric).
func (l *Limiter) report(c *Counter, s *slot) {
	inf := c.info.Load()
	if inf == nil {
		return
	}
	if inf.stats == nil {
		// keyInfo is immutable once published; attach stats by replacing it.
		ni := &keyInfo{policy: inf.policy, dim: inf.dim, stats: l.m.statsFor(inf.policy, inf.dim)}
		if !c.info.CompareAndSwap(inf, ni) {
			return
		}
		inf = ni
	}
	prev := s.prev.Load()
	for _, x := range [2]*slot{prev, s} {
		if x == nil {
			continue
		}
		if a := x.local.Load(); a > x.repAdm {
			inf.stats.admitted.Add(float64(a - x.repAdm))
			x.repAdm = a
		}
		if t := x.throttled.Load(); t > x.repThr {
			inf.stats.throttled.Add(float64(t - x.repThr))
			x.repThr = t
		}
	}
	if prev != nil && prev.repAdm == prev.local.Load() {
		s.prev.CompareAndSwap(prev, nil)
	}
	if over := s.local.Load() + s.remote.Load() - c.limit.Load(); over > s.overSeen {
		inf.stats.over.Add(float64(over - s.overSeen))
		s.overSeen = over
	}
}

// sweep drops counters whose window ended before the previous one began: their
// counts can no longer matter. Pinned counters only drop their old window.
func (l *Limiter) sweep(now time.Time) {
	t := now.Unix()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		deleted := false
		for k, c := range sh.m {
			s := c.cur.Load()
			if s != nil && s.idx >= c.win.index(t)-1 || c.dirtyF.Load() {
				continue
			}
			if c.pinned.Load() {
				continue
			}
			delete(sh.m, k)
			l.keys.Add(-1)
			deleted = true
		}
		if deleted {
			sh.index.Store(newCounterIndex(sh.m))
		}
		sh.mu.Unlock()
	}
}

// onMsg merges a batch of counts from another node. It runs on the transport's
// receive goroutine; a malformed batch is dropped from the first bad byte.
func (l *Limiter) onMsg(b []byte) {
	if len(b) < 9 || b[0] != wireVersion {
		return
	}
	from := binary.LittleEndian.Uint64(b[1:9])
	if from == l.nodeID {
		return
	}
	name, b, ok := readString(b[9:])
	if !ok {
		return
	}
	seq, b, ok := readUvarint(b)
	if !ok {
		return
	}
	nacks, b, ok := readUvarint(b)
	if !ok {
		return
	}
	ack := int64(0)
	for range nacks {
		var peer string
		var v int64
		if peer, b, ok = readString(b); !ok {
			return
		}
		if v, b, ok = readUvarint(b); !ok {
			return
		}
		if peer == l.name {
			ack = v
		}
	}
	// Merge the counts before recording the sequence: an ack we send must only
	// cover counts we have applied.
	entries := false
	for len(b) > 0 {
		e, rest, ok := readEntry(b)
		if !ok {
			break
		}
		b = rest
		l.merge(from, seq, e)
		entries = true
	}
	l.peersMu.Lock()
	p := l.peers[name]
	if p == nil {
		p = &peerState{}
		l.peers[name] = p
	}
	if p.id != from {
		// A restarted peer comes back under the same name with a new id and counts its
		// sequences from 1 again: what the old one sent and acknowledged is no
		// acknowledgement from the new one, nor one we may give it.
		p.id, p.theirSeq, p.acked = from, 0, 0
	}
	p.theirSeq = max(p.theirSeq, seq)
	p.acked = max(p.acked, ack)
	p.heard = l.cfg.Clock()
	l.peersMu.Unlock()
	if entries { // after theirSeq moved: the acknowledgement must cover this batch
		l.ackOwed.Store(true)
		l.pace.poke()
	}
}

type entry struct {
	key         uint64
	w           Window
	idx         int64
	count, ceil int64
	starved     bool
}

func readEntry(b []byte) (e entry, rest []byte, ok bool) {
	if len(b) < 9 {
		return
	}
	e.key = binary.LittleEndian.Uint64(b)
	e.w = Window(b[8])
	b = b[9:]
	if e.idx, b, ok = readUvarint(b); !ok {
		return
	}
	if e.count, b, ok = readUvarint(b); !ok {
		return
	}
	if e.ceil, b, ok = readUvarint(b); !ok {
		return
	}
	if len(b) < 1 || !e.w.Valid() {
		return e, nil, false
	}
	e.starved = b[0]&1 != 0
	return e, b[1:], true
}

// merge applies one node's state for (key, window): its count by max, so a repeated or
// late message changes nothing, and its ceiling if the message is newer than the last
// one that set it (seq 0, from push/pull, only fills a ceiling not yet known).
func (l *Limiter) merge(from uint64, seq int64, e entry) {
	c := l.lookup(e.key)
	if c == nil {
		c = l.create(e.key, e.w)
	}
	c.mu.Lock()
	s := c.cur.Load()
	if s == nil || s.idx < e.idx {
		s = l.rollLocked(c, e.idx, false)
	}
	if s.idx != e.idx {
		c.mu.Unlock()
		return // a window we have left behind
	}
	if e.starved {
		s.peerStarved.Store(l.tick.Load())
	}
	var p *peerCount
	for i := range s.peers {
		if s.peers[i].id == from {
			p = &s.peers[i]
		}
	}
	if p == nil {
		s.peers = append(s.peers, peerCount{id: from})
		p = &s.peers[len(s.peers)-1]
	}
	counted := e.count > p.count
	if counted {
		var sum int64
		p.count = e.count
		for _, q := range s.peers {
			sum += q.count
		}
		s.remote.Store(sum)
		s.lastRemoteTick.Store(l.tick.Load())
	}
	if seq > p.ceilSeq || p.ceilSeq == 0 && seq == 0 {
		p.ceil, p.ceilSeq = e.ceil, seq
	}
	// What peers spend or reserve is not ours to spend: keep the budget within what
	// our view leaves unreserved.
	av := max(l.avail(c, s), 0)
	for {
		b := s.budget.Load()
		if b <= av || s.budget.CompareAndSwap(b, av) {
			break
		}
	}
	c.mu.Unlock()
	if counted {
		l.markDirty(c)
	}
}

// localState is this node's whole view of the current windows — its own counts and
// every peer's — for a joining node or a periodic push/pull.
func (l *Limiter) localState(join bool) []byte {
	// Sized once (a key is ~50 bytes with three peers' counts), as the nonce store's:
	// growing it by appends was a third of the 0.8 s a million keys took to collect.
	b := make([]byte, 1, 1+l.keys.Load()*64)
	b[0] = wireVersion
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.RLock()
		for _, c := range sh.m {
			c.mu.Lock()
			s := c.cur.Load()
			if s != nil {
				b = binary.LittleEndian.AppendUint64(b, c.key)
				b = append(b, byte(c.win))
				b = binary.AppendUvarint(b, uint64(s.idx))
				b = binary.AppendUvarint(b, uint64(len(s.peers)+1))
				b = binary.LittleEndian.AppendUint64(b, l.nodeID)
				b = binary.AppendUvarint(b, uint64(s.local.Load()))
				b = binary.AppendUvarint(b, uint64(s.ceiling.Load()))
				for _, p := range s.peers {
					b = binary.LittleEndian.AppendUint64(b, p.id)
					b = binary.AppendUvarint(b, uint64(p.count))
					b = binary.AppendUvarint(b, uint64(p.ceil))
				}
			}
			c.mu.Unlock()
		}
		sh.mu.RUnlock()
	}
	return b
}

func (l *Limiter) mergeState(b []byte, join bool) {
	if len(b) < 1 || b[0] != wireVersion {
		return
	}
	b = b[1:]
	for len(b) >= 9 {
		key := binary.LittleEndian.Uint64(b)
		w := Window(b[8])
		b = b[9:]
		idx, n := binary.Uvarint(b)
		if n <= 0 {
			return
		}
		b = b[n:]
		np, n := binary.Uvarint(b)
		if n <= 0 || !w.Valid() {
			return
		}
		b = b[n:]
		for range np {
			if len(b) < 8 {
				return
			}
			id := binary.LittleEndian.Uint64(b)
			var cnt, ceil int64
			var ok bool
			if cnt, b, ok = readUvarint(b[8:]); !ok {
				return
			}
			if ceil, b, ok = readUvarint(b); !ok {
				return
			}
			if id != l.nodeID {
				l.merge(id, 0, entry{key: key, w: w, idx: int64(idx), count: cnt, ceil: ceil})
			}
		}
	}
}

// Count returns the calls counted cluster-wide on c in the window that holds now, as
// this node knows them (its own plus the latest from each peer). Safe for concurrent
// use; for tests, metrics and admin views.
func (l *Limiter) Count(c *Counter, now time.Time) int64 {
	if c == nil {
		return 0
	}
	s := c.cur.Load()
	if s == nil || s.idx != c.win.index(now.Unix()) {
		return 0
	}
	return s.local.Load() + s.remote.Load()
}

// Keys returns how many counters the limiter holds.
func (l *Limiter) Keys() int { return int(l.keys.Load()) }
