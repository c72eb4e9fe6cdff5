package cluster

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Push/pull state larger than memberlist carries.
//
// memberlist refuses a push/pull whose state is over 20 MiB (maxPushStateBytes): the
// receiving side fails the exchange, and with it the Join. A node's used nonces are
// 22 bytes each on the wire, so a member that had taken ~1,000 signed calls a second
// over the 15-minute window could no longer be joined, by a new node or by its own
// restarted worker; many quota keys do the same to the periodic exchange.
//
// So a channel whose state is over inlineStateMax is not put in the exchange. Its
// bytes are kept under a random token, and the exchange carries an offer instead (the
// sender's address, the token, each such channel's size). The receiving side, still
// inside memberlist's merge (so before Join returns, as for inline state), asks the
// sender for the channels it has a handler for, and the sender streams them back in
// chunks of bulkChunk, each a reliable user message (TCP, encrypted as every message
// when the gossip has a key). The state is the sender's at the time of the exchange,
// as an inline one is.
//
// A channel registered with RegisterLarge goes further: on a join its state is not
// even built during the exchange, which memberlist times out after 2 s (TCPTimeout),
// but when it is asked for (offered with size 0). Every live nonce of a table sized
// for 40 million takes about 2 s to collect.
const (
	inlineStateMax = 1 << 20
	bulkChunk      = 4 << 20
	// bulkKeep is how long an offered state waits to be asked for: a push/pull's
	// merge asks at once, so only a side that died meanwhile leaves it that long.
	bulkKeep = 30 * time.Second
	// bulkMax bounds what a receiver accepts for one channel.
	bulkMax = 1 << 30
)

// bulkIdle is how long a receiver waits without a chunk before it gives up on an
// offered state: the sender may first take seconds to build one (a variable for a
// test).
var bulkIdle = 10 * time.Second

// Messages on the internal channel (after internalLeaving).
const (
	internalBulkRequest byte = 2
	internalBulkChunk   byte = 3
)

// stateOffer marks an offer in the exchange's state: a record on the internal
// channel, which no user registers.
const (
	stateOffer   = channelInternal
	offerVersion = 1
)

type bulkToken [16]byte

// bulkStates is one member's side of bulk transfers: the states it offered, and those
// it waits for (both maps made with the Gossip).
type bulkStates struct {
	mu      sync.Mutex
	offered map[bulkToken]*offer
	waiting map[bulkToken]*bulkFetch
	// failed counts fetches that did not complete: Join fails when one of its own did.
	failed atomic.Int64
}

// offer is what a member offered in one exchange.
type offer struct {
	states map[byte][]byte // built during the exchange
	lazy   []byte          // channels whose state is built when asked for
	join   bool
}

// bulkFetch is a receiver's reassembly of the channels it asked one sender for.
type bulkFetch struct {
	parts    map[byte]*bulkPart
	left     int // channels not yet whole
	done     chan struct{}
	progress chan struct{} // a chunk came
}

type bulkPart struct {
	buf   []byte
	sized bool // buf has the state's size (a lazy one learns it from its first chunk)
	got   int
	whole bool
	seen  map[uint64]bool // chunk offsets filed: one sent twice counts once
}

// offerState keeps states (and notes the lazy channels) under a fresh token and
// returns the offer record's body.
func (g *Gossip) offerState(o *offer) []byte {
	var tok bulkToken
	_, _ = rand.Read(tok[:])
	b := &g.bulk
	b.mu.Lock()
	b.offered[tok] = o
	b.mu.Unlock()
	time.AfterFunc(bulkKeep, func() {
		b.mu.Lock()
		delete(b.offered, tok)
		b.mu.Unlock()
	})
	out := []byte{offerVersion}
	out = append(out, tok[:]...)
	out = appendString(out, g.name)
	out = appendString(out, g.Addr())
	out = binary.AppendUvarint(out, uint64(len(o.states)+len(o.lazy)))
	for ch, s := range o.states {
		out = append(out, ch)
		out = binary.AppendUvarint(out, uint64(len(s))) // over inlineStateMax, never 0
	}
	for _, ch := range o.lazy {
		out = append(out, ch, 0) // 0: built when asked for
	}
	return out
}

// fetchOffered asks the sender of an offer for the channels this member merges and
// hands each, whole, to its mergeState. It returns once they are merged, or with an
// error when they did not all come in time (nothing partial is merged).
func (g *Gossip) fetchOffered(offer []byte, join bool) error {
	if len(offer) < 1+len(bulkToken{}) || offer[0] != offerVersion {
		return errors.New("gossip: an offered state in an unknown format")
	}
	var tok bulkToken
	copy(tok[:], offer[1:])
	rest := offer[1+len(tok):]
	from, rest, ok := readString(rest)
	if !ok {
		return errors.New("gossip: a malformed state offer")
	}
	addr, rest, ok := readString(rest)
	if !ok {
		return errors.New("gossip: a malformed state offer")
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 {
		return errors.New("gossip: a malformed state offer")
	}
	rest = rest[k:]
	f := &bulkFetch{parts: map[byte]*bulkPart{}, done: make(chan struct{}), progress: make(chan struct{}, 1)}
	var want []byte
	for range n {
		if len(rest) < 1 {
			return errors.New("gossip: a malformed state offer")
		}
		ch := rest[0]
		size, k := binary.Uvarint(rest[1:])
		if k <= 0 {
			return errors.New("gossip: a malformed state offer")
		}
		rest = rest[1+k:]
		if size > bulkMax {
			return fmt.Errorf("gossip: %s offers %d bytes of state on channel %d; the most taken is %d", from, size, ch, bulkMax)
		}
		if u := g.users[ch].Load(); u == nil || u.mergeState == nil {
			continue // not ours to merge: a worker does not keep the node's nonces
		}
		if size == 0 {
			f.parts[ch] = &bulkPart{}
		} else {
			f.parts[ch] = &bulkPart{buf: make([]byte, size), sized: true}
		}
		want = append(want, ch)
	}
	to, err := nodeAt(from, addr)
	if err != nil {
		return err
	}
	req := []byte{channelInternal, internalBulkRequest}
	req = append(req, tok[:]...)
	req = appendString(req, g.name)
	req = appendString(req, g.Addr())
	req = append(req, want...)
	if len(want) == 0 {
		// Asked for nothing, so that the sender lets go of what it keeps for us.
		_ = g.ml.SendReliable(to, req)
		return nil
	}
	f.left = len(want)
	b := &g.bulk
	b.mu.Lock()
	b.waiting[tok] = f
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiting, tok)
		b.mu.Unlock()
	}()
	if err := g.ml.SendReliable(to, req); err != nil {
		return fmt.Errorf("gossip: ask %s for its state: %w", from, err)
	}
	idle := time.NewTimer(bulkIdle)
	defer idle.Stop()
wait:
	for {
		select {
		case <-f.done:
			break wait
		case <-f.progress:
			idle.Reset(bulkIdle)
		case <-idle.C:
			return fmt.Errorf("gossip: %s's state stopped coming (nothing for %v)", from, bulkIdle)
		}
	}
	for _, ch := range want {
		if u := g.users[ch].Load(); u != nil && u.mergeState != nil {
			u.mergeState(f.parts[ch].buf, join)
		}
	}
	return nil
}

// serveBulkRequest streams the offered channels a member asked for back to it. It
// runs on a goroutine of its own: a reliable send blocks for the transfer.
func (g *Gossip) serveBulkRequest(msg []byte) {
	if len(msg) < len(bulkToken{}) {
		return
	}
	var tok bulkToken
	copy(tok[:], msg)
	name, rest, ok := readString(msg[len(tok):])
	if !ok {
		return
	}
	addr, want, ok := readString(rest)
	if !ok {
		return
	}
	to, err := nodeAt(name, addr)
	if err != nil {
		return
	}
	b := &g.bulk
	b.mu.Lock()
	o := b.offered[tok]
	delete(b.offered, tok) // asked for once, by the member it was offered to
	b.mu.Unlock()
	if o == nil {
		return // expired: the receiver gives up
	}
	for _, ch := range want {
		s, ok := o.states[ch]
		if !ok {
			u := g.users[ch].Load()
			if !slices.Contains(o.lazy, ch) || u == nil || u.localState == nil {
				continue
			}
			s = u.localState(o.join)
		}
		// An empty state still goes, as one empty chunk: the receiver waits for it.
		for off := 0; off == 0 || off < len(s); off += bulkChunk {
			part := s[off:min(off+bulkChunk, len(s))]
			m := make([]byte, 0, 2+len(tok)+1+2*binary.MaxVarintLen64+len(part))
			m = append(m, channelInternal, internalBulkChunk)
			m = append(m, tok[:]...)
			m = append(m, ch)
			m = binary.AppendUvarint(m, uint64(off))
			m = binary.AppendUvarint(m, uint64(len(s)))
			m = append(m, part...)
			if g.ml.SendReliable(to, m) != nil {
				return // the receiver times out and merges nothing
			}
		}
	}
}

// takeBulkChunk files a chunk of an asked-for state.
func (g *Gossip) takeBulkChunk(msg []byte) {
	if len(msg) < len(bulkToken{})+1 {
		return
	}
	var tok bulkToken
	copy(tok[:], msg)
	ch := msg[len(tok)]
	rest := msg[len(tok)+1:]
	off, k := binary.Uvarint(rest)
	if k <= 0 {
		return
	}
	rest = rest[k:]
	size, k := binary.Uvarint(rest)
	if k <= 0 {
		return
	}
	data := rest[k:]
	b := &g.bulk
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.waiting[tok]
	if f == nil {
		return // given up on
	}
	p := f.parts[ch]
	if p == nil || p.whole {
		return
	}
	if !p.sized {
		if size > bulkMax {
			return // refused: the receiver gives up when nothing more comes
		}
		p.buf, p.sized = make([]byte, size), true
	}
	if size != uint64(len(p.buf)) || off > size || uint64(len(data)) > size-off || p.seen[off] {
		return
	}
	if p.seen == nil {
		p.seen = map[uint64]bool{}
	}
	p.seen[off] = true
	p.got += copy(p.buf[off:], data)
	select {
	case f.progress <- struct{}{}:
	default:
	}
	if p.got == len(p.buf) {
		p.whole = true
		if f.left--; f.left == 0 {
			close(f.done)
		}
	}
}

// nodeAt is a memberlist node for a name and host:port, for a reliable send to a
// member this side may not list yet (the other side of an exchange that is still
// being merged).
func nodeAt(name, addr string) (*memberlist.Node, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("gossip: member %s at %q: %w", name, addr, err)
	}
	p, err := strconv.Atoi(port)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || p <= 0 || p > 65535 {
		return nil, fmt.Errorf("gossip: member %s at %q: not an IP address and port", name, addr)
	}
	return &memberlist.Node{Name: name, Addr: ip, Port: uint16(p)}, nil
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
