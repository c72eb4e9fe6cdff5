package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// MembershipConfig says how raft's configuration follows gossip membership.
type MembershipConfig struct {
	// MaxVoters caps the raft voters; members beyond it join as non-voters and are
	// promoted when a voter dies. Default 5.
	MaxVoters int
	// DeadGrace is how long a member may be dead before the leader removes it from raft.
	// A member that leaves cleanly is removed at once. Default 30s.
	DeadGrace time.Duration
	// Interval is how often the leader reconciles even without events. Default 250ms.
	Interval time.Duration
	// Probe checks a member's raft address before the leader adds it to raft; a member
	// that fails it is left out (and logged) until it passes. The default dials it with
	// the raft stream layer, which with TLS completes a mutual handshake: so a node
	// without the cluster's certificates joins gossip but never raft, and cannot weaken
	// the quorum by becoming a voter nobody can reach.
	//
	// The reverse mismatch — a member with raft TLS joining a cluster without it — is
	// caught before the probe: a plain TCP connect to a TLS listener succeeds, so the
	// leader also compares the member's published NodeMeta.RaftTLS with its own
	// transport and refuses a member that has TLS when the cluster has none.
	Probe  func(addr string) error
	Logger *slog.Logger
}

// Membership keeps the raft configuration following gossip membership. It runs on every
// node and acts only while the node leads: it adds joining members as voters up to
// MaxVoters (non-voters beyond), promotes a non-voter when a voter dies, and removes
// members that left or stayed dead past the grace period.
type Membership struct {
	raft   *Raft
	gossip *Gossip
	cfg    MembershipConfig

	mu        sync.Mutex
	deadSince map[raft.ServerID]time.Time
	refused   map[raft.ServerID]string // last probe error logged per member

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// StartMembership starts reconciling raft membership with gossip. Stop it with Stop.
func StartMembership(r *Raft, g *Gossip, cfg MembershipConfig) *Membership {
	if cfg.MaxVoters <= 0 {
		cfg.MaxVoters = 5
	}
	if cfg.DeadGrace <= 0 {
		cfg.DeadGrace = 30 * time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Probe == nil {
		cfg.Probe = func(addr string) error { return r.stream.Probe(addr, time.Second) }
	}
	m := &Membership{raft: r, gossip: g, cfg: cfg, deadSince: map[raft.ServerID]time.Time{},
		refused: map[raft.ServerID]string{},
		kick:    make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go m.loop()
	return m
}

// Kick asks for a reconcile now (after a membership event). It never blocks.
func (m *Membership) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Stop ends reconciling and waits for the loop to exit.
func (m *Membership) Stop() {
	close(m.stop)
	<-m.done
}

func (m *Membership) loop() {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
		case <-m.raft.LeaderCh():
		}
		if m.raft.State() == raft.Leader {
			m.reconcile(time.Now())
		}
	}
}

// reconcile makes one pass of changes; each change is a raft configuration entry, so
// it makes them one at a time and re-reads the configuration on the next pass.
func (m *Membership) reconcile(now time.Time) {
	f := m.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	self := raft.ServerID(m.raft.localID())

	type gm struct {
		addr  string
		state MemberState
		tls   bool
	}
	members := map[raft.ServerID]gm{}
	for _, mem := range m.gossip.Members() {
		if mem.Meta.ID == "" || mem.Meta.RaftAddr == "" {
			continue
		}
		members[raft.ServerID(mem.Meta.ID)] = gm{addr: mem.Meta.RaftAddr, state: mem.State, tls: mem.Meta.RaftTLS}
	}

	inConfig := map[raft.ServerID]raft.Server{}
	aliveVoters := 0
	for _, s := range servers {
		inConfig[s.ID] = s
		g, known := members[s.ID]
		alive := s.ID == self || (known && g.state == MemberAlive)
		if alive && s.Suffrage == raft.Voter {
			aliveVoters++
		}
	}

	// Remove members that left, or stayed dead past the grace period.
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range servers {
		if s.ID == self {
			continue
		}
		g, known := members[s.ID]
		switch {
		case known && g.state == MemberAlive:
			delete(m.deadSince, s.ID)
			continue
		case known && g.state == MemberLeft:
			m.remove(s.ID, "left the cluster")
			return
		}
		since, ok := m.deadSince[s.ID]
		if !ok {
			m.deadSince[s.ID] = now
			continue
		}
		if now.Sub(since) >= m.cfg.DeadGrace {
			m.remove(s.ID, "dead past the grace period")
			delete(m.deadSince, s.ID)
			return
		}
	}

	// Promote a live non-voter when live voters are short (a voter died).
	for _, s := range servers {
		g, known := members[s.ID]
		if s.Suffrage != raft.Voter && known && g.state == MemberAlive && aliveVoters < m.cfg.MaxVoters {
			m.cfg.Logger.Info("raft: promoting non-voter", "id", s.ID)
			m.raft.AddVoter(s.ID, s.Address, 0, 5*time.Second)
			return
		}
	}

	// Add live members raft does not have yet (or whose address changed).
	for id, g := range members {
		if g.state != MemberAlive {
			continue
		}
		if s, ok := inConfig[id]; ok && string(s.Address) == g.addr {
			continue
		}
		if err := m.check(g.addr, g.tls); err != nil {
			if m.refused[id] != err.Error() {
				m.refused[id] = err.Error()
				m.cfg.Logger.Warn("raft: not adding a member whose raft address fails the probe (no route, or not the cluster's TLS)",
					"id", id, "addr", g.addr, "err", err)
			}
			continue
		}
		delete(m.refused, id)
		voters := 0
		for _, s := range servers {
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
		if voters < m.cfg.MaxVoters {
			m.cfg.Logger.Info("raft: adding voter", "id", id, "addr", g.addr)
			m.raft.AddVoter(id, raft.ServerAddress(g.addr), 0, 5*time.Second)
		} else {
			m.cfg.Logger.Info("raft: adding non-voter", "id", id, "addr", g.addr)
			m.raft.AddNonvoter(id, raft.ServerAddress(g.addr), 0, 5*time.Second)
		}
		return
	}
}

// ErrTLSMismatch is what the pre-add check reports for a member whose raft TLS setting
// differs from the cluster's.
var ErrTLSMismatch = errors.New("raft TLS mismatch")

// check decides whether a member may be added to raft: its published TLS setting must
// not be TLS on a plain cluster, and its raft address must pass the probe (with TLS, a
// mutual handshake, which a member without the cluster's certificates fails).
func (m *Membership) check(addr string, memberTLS bool) error {
	if clusterTLS := m.raft.stream.tls != nil; memberTLS && !clusterTLS {
		return fmt.Errorf("%w: the member has raft TLS on, this cluster runs raft without TLS (start it without --raft-tls-*, or give every node certificates)", ErrTLSMismatch)
	}
	return m.cfg.Probe(addr)
}

func (m *Membership) remove(id raft.ServerID, why string) {
	m.cfg.Logger.Info("raft: removing server", "id", id, "why", why)
	m.raft.RemoveServer(id, 0, 5*time.Second)
}
