package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

// GossipConfig configures a node's memberlist instance.
type GossipConfig struct {
	// NodeName is the node's name in the cluster; it must be unique among the members.
	NodeName string
	// BindAddr and BindPort are where gossip listens (UDP and TCP, same port). Port 0
	// picks a free port; BindPort reports it afterwards through Gossip.Addr.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other members dial; empty/0 means the
	// bound address.
	AdvertiseAddr string
	AdvertisePort int
	// SecretKey turns on gossip encryption (AES, 16, 24 or 32 bytes). Every member
	// must use the same key: a node with another key, or none, cannot join.
	SecretKey []byte
	// Meta is published to every member (see NodeMeta).
	Meta NodeMeta
	// ProbeInterval is how often a random member is probed. The default, 200ms, marks
	// a killed member dead in about a second (DESIGN.md: ~0.9 s at 200 ms vs ~4.5 s
	// with memberlist's 1 s default).
	ProbeInterval time.Duration
	// GossipInterval is how often membership gossip is sent. Default 20ms.
	GossipInterval time.Duration
	// PushPullInterval is how often a full state exchange (membership plus every
	// registered LocalState) runs with a random member; it heals anything a lost
	// packet left behind. Default 10s.
	PushPullInterval time.Duration
	// LogOutput receives memberlist's log; nil discards it.
	LogOutput io.Writer
}

// NodeMeta is the small record each member publishes through memberlist, encoded
// with msgpack. memberlist caps it at 512 bytes.
type NodeMeta struct {
	// ID is the node's stable id (its raft server id).
	ID string `msgpack:"id"`
	// RaftAddr is where the node's raft transport listens.
	RaftAddr string `msgpack:"raft"`
	// AdminAddr is the node's admin API address.
	AdminAddr string `msgpack:"admin"`
	// RaftTLS says the node's raft transport is mutual TLS. A member of an older
	// version publishes nothing here, which reads as false.
	RaftTLS bool `msgpack:"tls,omitempty"`
	// Role says which of the node's parts this member is: RoleNode (the default), a
	// RoleControl whose data plane runs in workers, or one of those RoleWorkers.
	Role string `msgpack:"role,omitempty"`
}

// Member roles (NodeMeta.Role). A node runs its data plane in process, or in worker
// processes that join the gossip as members of their own: then the node's own member
// is its control (raft, admin API, the nonces it gossips for its workers) and counts
// quotas nowhere, and each worker counts its own.
const (
	RoleNode    = ""
	RoleControl = "control"
	RoleWorker  = "worker"
)

// MemberState is a member's state as this node's failure detector sees it.
type MemberState int

// Member states, in memberlist's order.
const (
	MemberAlive MemberState = iota
	MemberSuspect
	MemberDead
	MemberLeft
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return "unknown"
}

// Member is one cluster member as this node knows it.
type Member struct {
	Name  string
	Addr  string // host:port of its gossip listener
	State MemberState
	Meta  NodeMeta
}

// EventKind says what happened to a member.
type EventKind int

// Membership events.
const (
	EventJoin EventKind = iota
	EventLeave
	EventUpdate
)

func (k EventKind) String() string {
	return [...]string{"join", "leave", "update"}[k]
}

// MemberEvent is delivered to the handler set with OnEvent. For EventLeave, Member.State
// says whether the member left cleanly (MemberLeft) or was found dead (MemberDead).
type MemberEvent struct {
	Kind   EventKind
	Member Member
}

// ErrChannelTaken is returned by Register when a channel already has a handler.
var ErrChannelTaken = errors.New("gossip: channel already registered")

// channelUser is what one registered user contributes: messages and push/pull state.
type channelUser struct {
	onMsg      func(msg []byte)
	localState func(join bool) []byte
	mergeState func(buf []byte, join bool)
	// large: on a join, the state is built when the other side asks for it, not
	// during memberlist's exchange (RegisterLarge).
	large bool
}

// Gossip is one node's memberlist instance: membership, failure detection, and a
// message bus multiplexed by channel byte. All methods are safe for concurrent use.
//
// It satisfies ratelimit.Transport structurally (LocalName, MemberNames, SendToAll,
// Register) without importing it.
type Gossip struct {
	ml     *memberlist.Memberlist
	name   string
	netT   *gossipTransport
	users  [256]atomic.Pointer[channelUser]
	regMu  sync.Mutex
	events *eventQueue

	mu      sync.Mutex
	table   map[string]Member // every member seen, kept from event callbacks
	leaving map[string]bool   // members that announced a clean Leave
	// peers holds private copies of the live members but this one, rebuilt on every
	// membership event: memberlist keeps changing the *Node values Members() returns,
	// so sending to those would race with its own updates.
	peers atomic.Pointer[[]peer]

	metaMu sync.Mutex
	meta   []byte

	introMu     sync.Mutex
	introducing map[string]bool // members an Introduce exchange runs with
	introShut   bool            // after Leave or Shutdown
	introWG     sync.WaitGroup

	bulk   bulkStates
	logger *log.Logger

	closeOnce sync.Once
}

// udpPayloadMax is the largest message SendToAll sends as one UDP packet; larger ones
// go over TCP. It leaves room under a 1400-byte MTU-safe packet for memberlist's
// headers, CRC and encryption overhead (nonce + tag + label).
const udpPayloadMax = 1200

// NewGossip creates the node's memberlist and starts listening. It does not contact
// anyone: call Join with a member's address, or nothing to start a new cluster.
// Register handlers and OnEvent before Join, so nothing that arrives is missed.
func NewGossip(cfg GossipConfig) (*Gossip, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("gossip: node name is required")
	}
	if n := len(cfg.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip: encryption key is %d bytes; want 16, 24 or 32", n)
	}
	meta, err := msgpack.Marshal(&cfg.Meta)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode node meta: %w", err)
	}
	if len(meta) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: node meta is %d bytes; memberlist allows %d", len(meta), memberlist.MetaMaxSize)
	}
	g := &Gossip{name: cfg.NodeName, table: map[string]Member{}, leaving: map[string]bool{}, meta: meta,
		bulk: bulkStates{offered: map[bulkToken]*offer{}, waiting: map[bulkToken]*bulkFetch{}}}
	g.events = newEventQueue()
	g.users[channelInternal].Store(&channelUser{onMsg: g.onInternal})

	c := memberlist.DefaultLANConfig()
	c.Name = cfg.NodeName
	c.BindAddr = cfg.BindAddr
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	}
	c.AdvertiseAddr = cfg.AdvertiseAddr
	c.ProbeInterval = durOr(cfg.ProbeInterval, 200*time.Millisecond)
	// A probe must time out well before the next one starts.
	c.ProbeTimeout = c.ProbeInterval / 2
	// Below 10 nodes a suspect is declared dead after SuspicionMult·ProbeInterval
	// (memberlist expects no confirmations from so few): 3 gives 0.6 s at 200 ms, so
	// detection (≤ one probe round to notice, then suspicion) stays near 1 s while a
	// member stalled by one long GC pause can still refute.
	c.SuspicionMult = 3
	c.GossipInterval = durOr(cfg.GossipInterval, 20*time.Millisecond)
	c.PushPullInterval = durOr(cfg.PushPullInterval, 10*time.Second)
	c.TCPTimeout = 2 * time.Second
	// Our payloads are small binary records; LZW costs latency and saves little.
	c.EnableCompression = false
	c.SecretKey = cfg.SecretKey
	c.GossipVerifyIncoming = true
	c.GossipVerifyOutgoing = true
	c.Delegate = (*gossipDelegate)(g)
	c.Events = (*gossipEvents)(g)
	if cfg.LogOutput != nil {
		c.LogOutput = cfg.LogOutput
	} else {
		c.LogOutput = io.Discard
	}

	// Our own network transport (see gossipTransport): memberlist's allocates 64 KiB
	// per received packet, and tests cut links through it.
	logger := log.New(c.LogOutput, "", log.LstdFlags)
	g.logger = logger
	var nt *gossipTransport
	for range 10 { // port 0 binds TCP then UDP on the same port, which can race
		nt, err = newGossipTransport(c.BindAddr, cfg.BindPort, logger)
		if err == nil || cfg.BindPort != 0 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossip: listen on %s:%d: %w", c.BindAddr, cfg.BindPort, err)
	}
	c.BindPort = nt.port()
	c.AdvertisePort = c.BindPort
	if cfg.AdvertisePort != 0 {
		c.AdvertisePort = cfg.AdvertisePort
	}
	g.netT = nt
	c.Transport = nt

	ml, err := memberlist.Create(c)
	if err != nil {
		_ = nt.Shutdown()
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g.ml = ml
	return g, nil
}

func durOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Addr returns the host:port other members use to reach this node.
func (g *Gossip) Addr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// LocalName returns this node's member name.
func (g *Gossip) LocalName() string { return g.name }

// Join contacts the given members (host:port) and merges their state, including every
// registered LocalState with join set, before it returns: a node that joins knows the
// cluster's rate-limit counts and used nonces before it admits anything. A state too
// large for memberlist's exchange comes in chunks after it, still before Join returns
// (bulkstate.go). It blocks for up to a few seconds per unreachable address and
// returns how many members it reached; the error is nil if at least one was reached
// and every state offered to it arrived whole.
func (g *Gossip) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	failed := g.bulk.failed.Load()
	n, err := g.ml.Join(addrs)
	if err == nil && g.bulk.failed.Load() != failed {
		// Another exchange running at the same time may be the one that failed: a
		// join reports it all the same, as its state may be the one missing.
		err = errors.New("gossip: joined, but a member's state did not arrive whole (see the gossip log)")
	}
	return n, err
}

// Leave tells the others this node is going (they see MemberLeft, not MemberDead) and
// waits up to timeout for that to be sent. Call Shutdown afterwards.
func (g *Gossip) Leave(timeout time.Duration) error {
	// A member that leaves introduces itself to no one: a join's exchange from here
	// would tell the others it is still about.
	g.stopIntroductions()
	// Over TCP, before the leave itself: memberlist handles its dead/leave messages
	// ahead of user messages, so a UDP notice would arrive too late. A member that
	// handles the leave first reports MemberDead until the notice corrects it
	// (onInternal); one that never gets the notice stays at MemberDead.
	//
	// The addresses come from this node's own table, not from memberlist's Members():
	// those are memberlist's live nodes, which it updates under its own lock while
	// SendReliable would read them without it (a data race the race detector reports).
	msg := append([]byte{channelInternal, internalLeaving}, g.name...)
	var wg sync.WaitGroup
	for _, m := range g.Members() {
		if m.Name == g.name || m.State != MemberAlive {
			continue
		}
		host, port, err := net.SplitHostPort(m.Addr)
		p, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			continue
		}
		to := &memberlist.Node{Name: m.Name, Addr: net.ParseIP(host), Port: uint16(p)}
		wg.Go(func() { _ = g.ml.SendReliable(to, msg) })
	}
	wg.Wait()
	return g.ml.Leave(timeout)
}

// channelInternal is Gossip's own channel; Register refuses it.
const (
	channelInternal byte = 255
	internalLeaving byte = 1
)

func (g *Gossip) onInternal(msg []byte) {
	if len(msg) <= 1 {
		return
	}
	switch msg[0] {
	case internalLeaving:
	case internalBulkRequest:
		req := append([]byte(nil), msg[1:]...) // msg is only valid during the call
		go g.serveBulkRequest(req)
		return
	case internalBulkChunk:
		g.takeBulkChunk(msg[1:])
		return
	default:
		return
	}
	name := string(msg[1:])
	g.mu.Lock()
	g.leaving[name] = true
	// The notice comes over TCP and the leave itself over UDP, each handled on its
	// own goroutine: under load the leave can be handled first and the member
	// reported dead. The notice then corrects it, so a clean leave is not mistaken
	// for a death (whose removal waits out a grace period).
	m, known := g.table[name]
	late := known && m.State == MemberDead
	if late {
		m.State = MemberLeft // no longer alive either way: the peer list stands
		g.table[name] = m
	}
	g.mu.Unlock()
	if late {
		g.events.push(MemberEvent{Kind: EventLeave, Member: m})
	}
}

// Shutdown stops the node's gossip without telling anyone (others will find it dead).
// It is idempotent; after it, no handler is called any more.
func (g *Gossip) Shutdown() error {
	var err error
	g.closeOnce.Do(func() {
		g.stopIntroductions()
		err = g.ml.Shutdown()
		g.introWG.Wait()
		g.events.close()
	})
	return err
}

func (g *Gossip) stopIntroductions() {
	g.introMu.Lock()
	g.introShut = true
	g.introMu.Unlock()
}

// Introduce exchanges state with the named live member directly, as a join does (a
// push/pull both ways: membership and every channel's state), in the background. It
// is for a member this node lists that does not list it: memberlist spreads a join by
// lossy gossip and otherwise heals a missed one only at the next periodic exchange.
// A call while an exchange with the member runs is dropped (the caller repeats); one
// with a member that died meanwhile may take memberlist's TCP timeout to fail.
func (g *Gossip) Introduce(name string) { g.introduce(name, nil) }

// introduce is Introduce for a member whose role is accepted (nil: any).
func (g *Gossip) introduce(name string, role func(string) bool) {
	g.mu.Lock()
	m, ok := g.table[name]
	g.mu.Unlock()
	if !ok || m.State != MemberAlive || name == g.name || role != nil && !role(m.Meta.Role) {
		return
	}
	g.introMu.Lock()
	defer g.introMu.Unlock()
	if g.introShut || g.introducing[name] {
		return
	}
	if g.introducing == nil {
		g.introducing = map[string]bool{}
	}
	g.introducing[name] = true
	g.introWG.Add(1)
	go func() {
		defer g.introWG.Done()
		// By address alone: memberlist would read a name's "/" (workers have one)
		// as the end of a "name/address" prefix.
		_, _ = g.ml.Join([]string{m.Addr})
		g.introMu.Lock()
		delete(g.introducing, name)
		g.introMu.Unlock()
	}()
}

// OnEvent sets the handler that receives membership events, in order, on one goroutine
// of its own: it may block (say, to change raft voters) without stalling gossip. Set it
// before Join. A nil handler drops events.
func (g *Gossip) OnEvent(h func(MemberEvent)) { g.events.setHandler(h) }

// Register attaches a user to a channel: onMsg receives every message sent to the
// channel (on memberlist's packet goroutine: it must not block, and msg is only valid
// during the call); localState and mergeState, if not nil, add the user's data to
// memberlist's push/pull exchange (on join, and every PushPullInterval). Register
// before Join. Channel 255 is Gossip's own.
func (g *Gossip) Register(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	return g.register(channel, &channelUser{onMsg: onMsg, localState: localState, mergeState: mergeState})
}

// RegisterLarge is Register for a user whose join state may take long to build (every
// used nonce): on a join its localState runs when the other side asks for the state,
// after memberlist's exchange, so the exchange does not time out waiting for it
// (bulkstate.go). Its periodic state (join false) goes as any other.
func (g *Gossip) RegisterLarge(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	return g.register(channel, &channelUser{onMsg: onMsg, localState: localState, mergeState: mergeState, large: true})
}

func (g *Gossip) register(channel byte, u *channelUser) error {
	g.regMu.Lock()
	defer g.regMu.Unlock()
	if channel == channelInternal || g.users[channel].Load() != nil {
		return fmt.Errorf("%w: %d", ErrChannelTaken, channel)
	}
	g.users[channel].Store(u)
	return nil
}

// NumMembers returns how many members are alive (or suspect), this node included.
func (g *Gossip) NumMembers() int { return g.ml.NumMembers() }

// MemberNames returns the names of the live members, this node included, sorted.
func (g *Gossip) MemberNames() []string {
	nodes := g.ml.Members()
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	sort.Strings(names)
	return names
}

// Members returns every member this node knows: live ones and those that left or died
// (until they come back), sorted by name. State is alive, dead or left (memberlist
// does not report suspicion to its event delegate).
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.table))
	for _, m := range g.table {
		out = append(out, m)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// toMember copies what we need out of n. memberlist mutates its nodes under its own
// lock, so this is only called from event callbacks, which run under that lock.
func toMember(n *memberlist.Node) Member {
	m := Member{Name: n.Name, Addr: n.Address()}
	if len(n.Meta) > 0 {
		// A member with undecodable meta (a newer version, say) is still a member.
		_ = msgpack.Unmarshal(n.Meta, &m.Meta)
	}
	return m
}

// SetMeta publishes new metadata and waits up to timeout for the update to be sent.
func (g *Gossip) SetMeta(meta NodeMeta, timeout time.Duration) error {
	b, err := msgpack.Marshal(&meta)
	if err != nil {
		return err
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("gossip: node meta is %d bytes; memberlist allows %d", len(b), memberlist.MetaMaxSize)
	}
	g.metaMu.Lock()
	g.meta = b
	g.metaMu.Unlock()
	return g.ml.UpdateNode(timeout)
}

// SendToAll sends msg on channel to every other live member by a direct send, not the
// gossip queue (which loses messages, DESIGN.md): one UDP packet each when it fits
// (udpPayloadMax), a TCP stream otherwise. It blocks only for the sends themselves
// (microseconds for UDP); a TCP send to a member that just died can take up to
// memberlist's TCP timeout. It returns the errors of the sends that failed; delivery
// over UDP is best effort, so a user that must not lose data repeats it.
func (g *Gossip) SendToAll(channel byte, msg []byte) error {
	return g.sendTo(channel, msg, nil)
}

// sendTo sends to the live peers to accepts (nil: all).
func (g *Gossip) sendTo(channel byte, msg []byte, to func(peer) bool) error {
	peers := g.peers.Load()
	if peers == nil {
		return nil
	}
	buf := make([]byte, 1+len(msg))
	buf[0] = channel
	copy(buf[1:], msg)
	var errs []error
	for _, p := range *peers {
		if to != nil && !to(p) {
			continue
		}
		n := p.node
		var err error
		if len(buf) <= udpPayloadMax {
			err = g.ml.SendBestEffort(n, buf)
		} else {
			err = g.ml.SendReliable(n, buf)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("send to %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// SetDropFilter is a test hook that simulates a network partition: while set, every
// packet and stream this node would send to an address (host:port) for which drop
// returns true is silently dropped, memberlist's own probes included, so the other
// side is eventually marked dead. Set it on both sides for a clean partition; nil
// heals it (call Join again to exchange state at once, as after any partition).
func (g *Gossip) SetDropFilter(drop func(addr string) bool) { g.netT.drop.set(drop) }

// View is the part of the gossip that reaches the members of some roles only: the
// users of a channel that only those members register (quota counts go to the members
// that count quotas, nonces to the nodes). It satisfies ratelimit.Transport.
type View struct {
	g     *Gossip
	roles []string
}

// View returns the members of roles as a transport of their own.
func (g *Gossip) View(roles ...string) *View { return &View{g: g, roles: roles} }

// Introduce is Gossip.Introduce, for a member of the view's roles.
func (v *View) Introduce(name string) { v.g.introduce(name, v.has) }

func (v *View) has(role string) bool { return slices.Contains(v.roles, role) }

// LocalName returns this member's name.
func (v *View) LocalName() string { return v.g.name }

// MemberNames returns the live members of the view's roles, this one included, sorted.
func (v *View) MemberNames() []string {
	names := []string{v.g.name}
	v.g.mu.Lock()
	for _, m := range v.g.table {
		if m.Name != v.g.name && m.State == MemberAlive && v.has(m.Meta.Role) {
			names = append(names, m.Name)
		}
	}
	v.g.mu.Unlock()
	sort.Strings(names)
	return names
}

// SendToAll sends msg on channel to every other live member of the view's roles, as
// Gossip.SendToAll does to all.
func (v *View) SendToAll(channel byte, msg []byte) error {
	return v.g.sendTo(channel, msg, func(p peer) bool { return v.has(p.role) })
}

// SendToAllBut is SendToAll but for the members skip names (which the caller reaches
// another way).
func (v *View) SendToAllBut(channel byte, msg []byte, skip func(name string) bool) error {
	return v.g.sendTo(channel, msg, func(p peer) bool { return v.has(p.role) && !skip(p.node.Name) })
}

// Register attaches a user to a channel (Gossip.Register).
func (v *View) Register(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	return v.g.Register(channel, onMsg, localState, mergeState)
}

// RegisterLarge attaches a user whose join state is built on request
// (Gossip.RegisterLarge).
func (v *View) RegisterLarge(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	return v.g.RegisterLarge(channel, onMsg, localState, mergeState)
}

// gossipDelegate is Gossip seen as memberlist's Delegate.
type gossipDelegate Gossip

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	d.metaMu.Lock()
	defer d.metaMu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

func (d *gossipDelegate) NotifyMsg(b []byte) {
	if len(b) == 0 {
		return
	}
	if u := d.users[b[0]].Load(); u != nil && u.onMsg != nil {
		u.onMsg(b[1:])
	}
}

// GetBroadcasts is unused: everything goes by direct send (see SendToAll).
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState concatenates every user's state as (channel, uvarint length, bytes); the
// states over inlineStateMax, and on a join those of RegisterLarge users, are offered
// instead, in one record on the internal channel (bulkstate.go).
func (d *gossipDelegate) LocalState(join bool) []byte {
	var out []byte
	o := &offer{join: join}
	for ch := range d.users {
		u := d.users[ch].Load()
		if u == nil || u.localState == nil {
			continue
		}
		if u.large && join {
			o.lazy = append(o.lazy, byte(ch))
			continue
		}
		s := u.localState(join)
		if len(s) > inlineStateMax {
			if o.states == nil {
				o.states = map[byte][]byte{}
			}
			o.states[byte(ch)] = s
			continue
		}
		out = append(out, byte(ch))
		out = binary.AppendUvarint(out, uint64(len(s)))
		out = append(out, s...)
	}
	if o.states != nil || o.lazy != nil {
		body := (*Gossip)(d).offerState(o)
		out = append(out, stateOffer)
		out = binary.AppendUvarint(out, uint64(len(body)))
		out = append(out, body...)
	}
	return out
}

func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool) {
	for len(buf) > 0 {
		ch := buf[0]
		n, k := binary.Uvarint(buf[1:])
		if k <= 0 || uint64(len(buf)-1-k) < n {
			return // truncated: drop the rest rather than misparse it
		}
		part := buf[1+k : 1+k+int(n)]
		buf = buf[1+k+int(n):]
		if ch == stateOffer {
			if err := (*Gossip)(d).fetchOffered(part, join); err != nil {
				d.bulk.failed.Add(1)
				d.logger.Printf("[ERR] tollgate: %v", err)
			}
			continue
		}
		if u := d.users[ch].Load(); u != nil && u.mergeState != nil {
			u.mergeState(part, join)
		}
	}
}

// gossipEvents is Gossip seen as memberlist's EventDelegate.
type gossipEvents Gossip

func (e *gossipEvents) NotifyJoin(n *memberlist.Node) {
	m := toMember(n)
	m.State = MemberAlive
	e.mu.Lock()
	e.table[m.Name] = m
	delete(e.leaving, m.Name)
	e.rebuildPeers()
	e.mu.Unlock()
	e.events.push(MemberEvent{Kind: EventJoin, Member: m})
}

func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	m := toMember(n)
	e.mu.Lock()
	// memberlist knows whether a member left or died but does not say so here;
	// members announce a clean leave on channelInternal first (see Leave).
	m.State = MemberDead
	if e.leaving[m.Name] {
		m.State = MemberLeft
	}
	e.table[m.Name] = m
	e.rebuildPeers()
	e.mu.Unlock()
	e.events.push(MemberEvent{Kind: EventLeave, Member: m})
}

func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) {
	m := toMember(n)
	m.State = MemberAlive
	e.mu.Lock()
	e.table[m.Name] = m
	e.rebuildPeers()
	e.mu.Unlock()
	e.events.push(MemberEvent{Kind: EventUpdate, Member: m})
}

// rebuildPeers publishes copies of the live members but this one. Called with e.mu held.
func (e *gossipEvents) rebuildPeers() {
	peers := make([]peer, 0, len(e.table))
	for _, m := range e.table {
		if m.Name == e.name || m.State != MemberAlive {
			continue
		}
		host, port, err := net.SplitHostPort(m.Addr)
		if err != nil {
			continue
		}
		p, _ := strconv.Atoi(port)
		peers = append(peers, peer{node: &memberlist.Node{Name: m.Name, Addr: net.ParseIP(host), Port: uint16(p)}, role: m.Meta.Role})
	}
	e.peers.Store(&peers)
}

// peer is a live member to send to, with its role.
type peer struct {
	node *memberlist.Node
	role string
}

// eventQueue hands events to the handler on its own goroutine, in order, so a slow
// handler never blocks memberlist (whose event calls hold its state lock).
type eventQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	q       []MemberEvent
	handler func(MemberEvent)
	closed  bool
	done    chan struct{}
}

func newEventQueue() *eventQueue {
	e := &eventQueue{done: make(chan struct{})}
	e.cond = sync.NewCond(&e.mu)
	go e.run()
	return e
}

func (e *eventQueue) setHandler(h func(MemberEvent)) {
	e.mu.Lock()
	e.handler = h
	e.mu.Unlock()
}

func (e *eventQueue) push(ev MemberEvent) {
	e.mu.Lock()
	if !e.closed {
		e.q = append(e.q, ev)
		e.cond.Signal()
	}
	e.mu.Unlock()
}

func (e *eventQueue) close() {
	e.mu.Lock()
	e.closed = true
	e.cond.Signal()
	e.mu.Unlock()
	<-e.done
}

func (e *eventQueue) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		for len(e.q) == 0 && !e.closed {
			e.cond.Wait()
		}
		if e.closed {
			e.mu.Unlock()
			return
		}
		ev := e.q[0]
		e.q = e.q[1:]
		h := e.handler
		e.mu.Unlock()
		if h != nil {
			h(ev)
		}
	}
}

var (
	_ memberlist.Delegate      = (*gossipDelegate)(nil)
	_ memberlist.EventDelegate = (*gossipEvents)(nil)
)
