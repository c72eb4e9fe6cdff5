package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tollgate/tollgate/cluster"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/ratelimit"
)

// Config is a node's configuration: where it keeps data and what it listens on.
type Config struct {
	DataDir string
	Listen  string // data plane
	// TLSListen, when set, is a second data plane address speaking TLS, with the
	// certificates of the replicated state chosen by SNI.
	TLSListen  string
	Admin      string // admin API, health, metrics
	Raft       string
	Gossip     string
	BaseDomain string
	NodeID     string
	Join       []string
	// AdminToken is the bearer token of the admin API; empty reads or creates
	// DataDir/admin-token.
	AdminToken  string
	MaxBodySize int
	// SubdomainDailyLimit caps the calls a day each group takes on its default
	// subdomain (custom domains are not capped); 0 leaves it uncapped.
	SubdomainDailyLimit int64
	// NonceCapacity is how many used nonces the node remembers over the signature
	// window (default 4,000,000, rounded up by the store to 6.3M in 168 MB): the most
	// signed calls a node can take per window. Beyond it, signed calls are refused
	// until old nonces expire.
	NonceCapacity int
	// NonceFile, when set, keeps the nonce table in that file (on tmpfs: /dev/shm),
	// shared with every other node on the host that names it: a nonce used on one is
	// refused on all at once, before gossip could carry it. Nodes sharing a file must
	// have the same NonceCapacity.
	NonceFile string
	// Workers, when above 0, runs the data plane in that many worker processes of one
	// P each (GOMAXPROCS=1) on the node's listeners: a connection's work then stays on
	// one CPU, which is what the CPU per request depends on (README). Workers count
	// quotas as gossip members of their own and share the node's nonce table in
	// memory. 0 serves in the node's process.
	Workers int
	// PinWorkers runs worker i on the i-th CPU the node may use, when there is one
	// worker per such CPU, as nginx's worker_cpu_affinity does: the kernel then never
	// moves a worker, and its connections' state, to another CPU. Defaults() sets it.
	PinWorkers bool
	// Netpoller serves the data plane through the runtime's netpoller instead of
	// Tollgate's own epoll poller (proxy.Config.Netpoller): about 10 µs less per request
	// when connections come one at a time, about 5% more CPU per request under load.
	Netpoller bool
	// WorkerCommand starts a worker (default: this executable with "worker").
	WorkerCommand []string
	// TrustedProxies lists proxies (CIDRs or addresses) whose X-Forwarded-For names the
	// client; empty trusts nobody.
	TrustedProxies []string
	// GossipKey encrypts gossip (16, 24 or 32 bytes); every member needs the same one.
	GossipKey []byte
	// MaxVoters caps raft voters (default 5); DeadGrace is how long a dead member stays
	// in raft before the leader removes it (default 30s).
	MaxVoters int
	DeadGrace time.Duration
	// RaftTLSCA, RaftTLSCert and RaftTLSKey (PEM files) make raft mutual TLS: every
	// node presents a certificate from the CA and accepts only peers that do. Set all
	// three or none; a node without them cannot join a cluster that has them.
	RaftTLSCA, RaftTLSCert, RaftTLSKey string
	// SnapshotInterval is how often raft checks whether to snapshot and compact its log
	// (default 2m); SnapshotThreshold is how many new entries make it snapshot (default
	// 8192); TrailingLogs is how many entries a snapshot leaves in the log for
	// followers a little behind (default 10240). A node further behind gets the snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// ProvisionalWait is how long a node restarted with state of its own waits for a
	// leader before it serves what its snapshot and log hold (default 2s; see
	// provisionalLoop). Negative never serves a provisional state.
	ProvisionalWait time.Duration
	Logger          *slog.Logger
	// RaftLog receives raft's own log lines.
	RaftLog io.Writer
}

// Defaults are the values `tollgate node` uses with no flags.
func Defaults() Config {
	return Config{
		DataDir:     "./tollgate-data",
		Listen:      ":8080",
		Admin:       "127.0.0.1:9080",
		Raft:        "127.0.0.1:7000",
		Gossip:      "127.0.0.1:7946",
		BaseDomain:  "localhost",
		MaxBodySize: 8 << 20,

		SnapshotInterval:  2 * time.Minute,
		SnapshotThreshold: 8192,
		TrailingLogs:      10240,
		ProvisionalWait:   2 * time.Second,
		PinWorkers:        true,
	}
}

// TokenFile is the file in the data dir that holds the admin token.
const TokenFile = "admin-token"

// Node is a running Tollgate node. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	fsm     *fsm.FSM
	raft    *cluster.Raft
	proxy   *proxy.Proxy
	gossip  *cluster.Gossip
	members *cluster.Membership
	limiter *ratelimit.Limiter
	nonces  *ratelimit.NonceStore
	// noncesLoaded: the start loaded the nonces a clean stop saved (see markUnsaved).
	noncesLoaded bool
	reg          *prometheus.Registry
	token        string
	started      time.Time

	forwardClient *http.Client

	certs certStore
	tlsLn net.Listener
	// With Workers: the pool, and what it hands every worker (the nonce table's
	// file, the listeners' sockets).
	pool        *workerPool
	workerFiles []*os.File
	dataLn      net.Listener
	adminLn     net.Listener
	admin       *http.Server

	// served is the state index the data plane serves; servedCh is closed and replaced
	// each time it moves, so writers can wait for their change to be live.
	servedMu sync.Mutex
	served   uint64
	servedCh chan struct{}

	// provisional, while set, is the state the node serves instead of its FSM's: a node
	// restarted without a quorum serves its own snapshot and log (provisionalLoop).
	// provMu orders installing it, publishing FSM states and dropping it; caughtUp says
	// the node has reached a leader's commit index, after which it is never installed.
	provMu      sync.Mutex
	provisional atomic.Pointer[fsm.State]
	caughtUp    bool

	ready    atomic.Bool
	draining atomic.Bool
	stop     chan struct{}
	wg       sync.WaitGroup
}

// Start opens the node's state, starts raft (bootstrapping a one-node cluster on first
// start), and serves the data plane and the admin API. It returns once every listener
// is bound; readiness follows when the node has applied its log.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = "localhost"
	}
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = Defaults().MaxBodySize
	}
	if cfg.Workers < 0 || cfg.Workers > maxWorkers {
		return nil, fmt.Errorf("workers: %d; want 0 (serve in this process) to %d", cfg.Workers, maxWorkers)
	}
	if cfg.ProvisionalWait == 0 {
		cfg.ProvisionalWait = Defaults().ProvisionalWait
	}
	if cfg.NodeID != "" {
		if err := checkNodeID(cfg.NodeID); err != nil {
			return nil, err
		}
	}
	var raftTLS *tls.Config
	if cfg.RaftTLSCA != "" || cfg.RaftTLSCert != "" || cfg.RaftTLSKey != "" {
		var err error
		if raftTLS, err = cluster.LoadTLS(cfg.RaftTLSCA, cfg.RaftTLSCert, cfg.RaftTLSKey); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	id, err := nodeID(cfg)
	if err != nil {
		return nil, err
	}
	cfg.NodeID = id
	token, err := adminToken(cfg)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", id), fsm: fsm.New(), token: token,
		started: time.Now(), servedCh: make(chan struct{}), stop: make(chan struct{}),
		forwardClient: &http.Client{Timeout: writeTimeout + 5*time.Second}}

	n.reg = prometheus.NewRegistry()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Bind the listeners before raft starts so that a busy port fails fast and changes
	// nothing on disk.
	if n.dataLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("data plane: %w", err)
	}
	if cfg.Workers == 0 && !cfg.Netpoller {
		n.dataLn = proxy.NewPollListener(n.dataLn) // workers take the socket itself
	}
	if n.adminLn, err = net.Listen("tcp", cfg.Admin); err != nil {
		n.dataLn.Close()
		return nil, fmt.Errorf("admin API: %w", err)
	}
	if cfg.TLSListen != "" {
		ln, err := net.Listen("tcp", cfg.TLSListen)
		if err != nil {
			n.dataLn.Close()
			n.adminLn.Close()
			return nil, fmt.Errorf("TLS data plane: %w", err)
		}
		n.tlsLn = ln // workers wrap it themselves
		if cfg.Workers == 0 {
			if !cfg.Netpoller {
				ln = proxy.NewPollListener(ln)
			}
			n.tlsLn = tls.NewListener(ln, &tls.Config{GetCertificate: n.certs.getCertificate, MinVersion: tls.VersionTLS12})
		}
	}
	if err := n.startGossip(); err != nil {
		n.dataLn.Close()
		n.adminLn.Close()
		if n.tlsLn != nil {
			n.tlsLn.Close()
		}
		return nil, err
	}
	if err := n.startQuotas(); err != nil {
		n.gossip.Shutdown()
		n.closeWorkerFiles() // the listeners, and a nonce file made for workers
		n.adminLn.Close()
		return nil, err
	}
	if cfg.Workers == 0 {
		n.proxy, err = proxy.New(proxy.Config{
			Netpoller:           cfg.Netpoller,
			BaseDomain:          cfg.BaseDomain,
			MaxBodySize:         cfg.MaxBodySize,
			Registerer:          n.reg,
			Ready:               n.Ready,
			NodeID:              id,
			Logger:              n.log,
			Nonces:              n.nonces,
			Limiter:             n.limiter,
			SubdomainDailyLimit: cfg.SubdomainDailyLimit,
			TrustedProxies:      cfg.TrustedProxies,
		})
	}
	if err != nil {
		n.stopQuotas()
		n.gossip.Shutdown()
		n.dataLn.Close()
		n.adminLn.Close()
		return nil, err
	}
	n.raft, err = cluster.OpenRaft(cluster.RaftConfig{
		ID: id, Dir: filepath.Join(cfg.DataDir, "raft"), Addr: cfg.Raft,
		Bootstrap: len(cfg.Join) == 0, LogOutput: cfg.RaftLog, TLS: raftTLS,
		SnapshotInterval: cfg.SnapshotInterval, SnapshotThreshold: cfg.SnapshotThreshold,
		TrailingLogs: cfg.TrailingLogs,
	}, n.fsm)
	if err != nil {
		n.stopQuotas()
		n.gossip.Shutdown()
		n.dataLn.Close()
		n.adminLn.Close()
		return nil, err
	}
	n.members = cluster.StartMembership(n.raft, n.gossip, cluster.MembershipConfig{
		MaxVoters: cfg.MaxVoters, DeadGrace: cfg.DeadGrace, Logger: n.log})
	n.gossip.OnEvent(func(cluster.MemberEvent) {
		if n.limiter != nil {
			n.limiter.MembersChanged()
		}
		n.members.Kick()
		n.rememberPeers()
	})
	n.updatePolicies(n.fsm.State())
	restored := n.fsm.State() // the snapshot raft restored, before anything is applied
	if err := n.markUnsaved(); err != nil {
		n.members.Stop()
		n.raft.Close()
		n.stopQuotas()
		n.gossip.Shutdown()
		n.dataLn.Close()
		n.adminLn.Close()
		n.closeWorkerFiles()
		return nil, err
	}
	if n.proxy != nil {
		n.proxy.Update(n.fsm.State())
		n.certs.update(n.fsm.State())
	} else if err := n.startWorkers(); err != nil {
		n.members.Stop()
		n.raft.Close()
		n.stopQuotas()
		n.gossip.Shutdown()
		n.closeWorkerFiles()
		n.adminLn.Close()
		return nil, err
	}
	if (n.raft.StartIndex() > 0 || n.raft.RestoredIndex() > 0) && cfg.ProvisionalWait > 0 {
		n.wg.Add(1)
		go n.provisionalLoop(restored, n.raft.RestoredIndex())
	}
	n.wg.Add(3)
	go n.compileLoop()
	go n.readyLoop()
	go n.secretLoop()
	if n.proxy != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.proxy.Serve(n.dataLn); err != nil && !n.draining.Load() {
				n.log.Error("data plane stopped", "err", err)
			}
		}()
	}
	if n.tlsLn != nil && n.proxy != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.proxy.Serve(n.tlsLn); err != nil && !n.draining.Load() {
				n.log.Error("TLS data plane stopped", "err", err)
			}
		}()
	}
	n.admin = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.admin.Serve(n.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("admin API stopped", "err", err)
		}
	}()
	if len(cfg.Join) == 0 && (n.raft.StartIndex() > 0 || n.raft.RestoredIndex() > 0) {
		// A restarted node rejoins the members it last knew (the others have marked it
		// dead and will not gossip with it on their own).
		n.wg.Add(1)
		go n.rejoinPeers()
	}
	if len(cfg.Join) > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.joinCluster(); err != nil {
				n.log.Error("could not join the cluster", "err", err)
			}
		}()
	}
	n.log.Info("node started", "gossip", n.gossip.Addr(), "listen", n.dataLn.Addr().String(), "admin", n.adminLn.Addr().String(),
		"raft", cfg.Raft, "base_domain", cfg.BaseDomain, "data", cfg.DataDir)
	return n, nil
}

// compileLoop rebuilds the routing table after every state change. Changes coalesce:
// during a burst of applies it compiles the newest state, not each one.
func (n *Node) compileLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.fsm.Changed():
		}
		n.provMu.Lock()
		if n.provisional.Load() == nil { // else the provisional state stays until caught up
			n.publish(n.fsm.State())
		}
		n.provMu.Unlock()
	}
}

// publish makes the data plane serve s, a state of the FSM, and wakes the writers
// waiting for it. The caller holds provMu.
func (n *Node) publish(s *fsm.State) {
	if n.pool != nil {
		// Served once every worker says so (noteServed).
		n.pool.publish(s)
		return
	}
	n.updatePolicies(s)
	n.proxy.Update(s)
	if err := n.certs.update(s); err != nil {
		n.log.Error("TLS certificates", "err", err)
	}
	// s.Index, not the FSM's applied index: that one is stored after Apply notifies,
	// so reading it here could miss the change being published (and no notification
	// would follow), or count a state not yet published.
	n.markServed(s.Index)
}

// markServed records that the data plane serves the state at index, waking the
// writers waiting for it.
func (n *Node) markServed(index uint64) {
	n.servedMu.Lock()
	defer n.servedMu.Unlock()
	if index <= n.served {
		return
	}
	n.served = index
	close(n.servedCh)
	n.servedCh = make(chan struct{})
}

// noteServed moves the served index to what every live worker serves.
func (n *Node) noteServed() {
	if index, ok := n.pool.servedIndex(); ok {
		n.markServed(index)
	}
}

// waitServed blocks until the data plane serves a state at or after index, or the
// timeout passes; so an acknowledged write is live on this node when the caller hears.
func (n *Node) waitServed(index uint64, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		n.servedMu.Lock()
		served, ch := n.served, n.servedCh
		n.servedMu.Unlock()
		if served >= index {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		case <-n.stop:
			return false
		}
	}
}

// readyLoop marks the node ready once it has a leader and has applied and compiled
// everything the leader had committed when the node first reached it (which covers all
// it had committed on disk when it started; entries on disk that were never committed
// may be replaced by the new leader, so they are not waited for). Until then /readyz
// answers 503 — unless provisionalLoop serves the node's own state meanwhile. Once
// caught up, a provisional state gives way to the FSM's.
func (n *Node) readyLoop() {
	defer n.wg.Done()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var target, stateTarget uint64
	haveTarget := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !haveTarget {
			idx, stIdx, err := n.leaderCommitIndex()
			if err != nil {
				continue
			}
			target, stateTarget, haveTarget = idx, stIdx, true
		}
		// Raft's applied index runs ahead of the FSM (it counts entries handed to it),
		// so the FSM must also have reached the leader's last state change.
		applied := n.appliedIndex()
		if applied < target || n.fsm.AppliedIndex() < stateTarget {
			continue
		}
		n.provMu.Lock()
		n.caughtUp = true
		if n.provisional.Swap(nil) != nil {
			n.log.Info("caught up with the leader: serving the committed state instead of the provisional one", "applied_index", applied)
			n.publish(n.fsm.State())
		}
		n.provMu.Unlock()
		if !n.waitServed(n.fsm.State().Index, 0) {
			continue
		}
		// A leader is ready once the cluster secret is committed (secretLoop), so that
		// nothing the node proposes on its own lands after it reports ready.
		if n.fsm.State().ClusterSecret == "" && n.raft.State() == raft.Leader {
			continue
		}
		n.ready.Store(true)
		if n.pool != nil {
			n.pool.setReady(true)
		}
		n.log.Info("node ready", "applied_index", applied, "target_index", target)
		return
	}
}

// secretLoop makes sure the cluster has its internal secret: the first node to lead a
// cluster without one proposes it.
func (n *Node) secretLoop() {
	defer n.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for n.fsm.State().ClusterSecret == "" {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		// Only once caught up: a restarted leader must not propose before its log has
		// replayed the secret it already has.
		n.provMu.Lock()
		caughtUp := n.caughtUp
		n.provMu.Unlock()
		if n.raft.State() != raft.Leader || !caughtUp {
			continue
		}
		// Again: the loop's check ran before the tick, and catching up may have
		// replayed the secret since. Proposing anyway wrote a spurious entry at every
		// restart (the state's index moved with nothing changed).
		if n.fsm.State().ClusterSecret != "" {
			return
		}
		if _, err := n.propose(fsm.CmdInitCluster, &fsm.InitCluster{Secret: randomHex(32)}); err != nil {
			n.log.Warn("could not set the cluster secret; retrying", "err", err)
		}
	}
}

// appliedIndex is the last raft index this node applied, configuration and no-op
// entries included (the FSM only sees commands).
func (n *Node) appliedIndex() uint64 { return max(n.raft.AppliedIndex(), n.fsm.AppliedIndex()) }

// Ready reports whether the node is caught up and serving, and not draining.
func (n *Node) Ready() bool { return n.ready.Load() && !n.draining.Load() }

// State returns the state the node serves: its FSM's, or while it serves a provisional
// state (restarted without a quorum) that one.
func (n *Node) State() *fsm.State {
	if s := n.provisional.Load(); s != nil {
		return s
	}
	return n.fsm.State()
}

// Provisional reports whether the node serves a provisional state: restarted without a
// quorum, it serves its own snapshot and log, not yet confirmed by a leader.
func (n *Node) Provisional() bool { return n.provisional.Load() != nil }

// FSM exposes the node's state machine.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft exposes the node's raft replica.
func (n *Node) Raft() *cluster.Raft { return n.raft }

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// TLSAddr is the TLS data plane's bound address, or "" when there is none.
func (n *Node) TLSAddr() string {
	if n.tlsLn == nil {
		return ""
	}
	return n.tlsLn.Addr().String()
}

// DataAddr is the data plane's bound address.
func (n *Node) DataAddr() string { return n.dataLn.Addr().String() }

// AdminAddr is the admin API's bound address.
func (n *Node) AdminAddr() string { return n.adminLn.Addr().String() }

// Token is the admin API's bearer token.
func (n *Node) Token() string { return n.token }

// Close drains the node: it stops being ready, lets in-flight requests finish (up to
// ctx's deadline), then stops raft and closes its store. Every committed change is on
// disk already; Close loses nothing.
func (n *Node) Close(ctx context.Context) error {
	if !n.draining.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if n.pool != nil {
		wait := 10 * time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = max(time.Until(d), 0)
		}
		n.pool.stop(wait) // a drained worker's /readyz says not ready at once
		n.closeWorkerFiles()
	} else if err := n.proxy.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("data plane: %w", err))
	}
	n.leave(ctx)
	if err := n.admin.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("admin API: %w", err))
	}
	close(n.stop)
	n.members.Stop()
	if err := n.raft.Close(); err != nil {
		errs = append(errs, fmt.Errorf("raft: %w", err))
	}
	n.saveNonces()
	n.stopQuotas()
	if err := n.gossip.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("gossip: %w", err))
	}
	n.wg.Wait()
	return errors.Join(errs...)
}

// leave takes the node out of the cluster cleanly: it hands leadership over if it
// leads, announces its departure over gossip (the leader then removes it from raft at
// once, not after the dead-member grace period) and waits, within ctx, until it is out
// of the raft configuration. A node alone in its cluster just stops.
func (n *Node) leave(ctx context.Context) {
	cfg := n.raft.GetConfiguration()
	if cfg.Error() != nil || len(cfg.Configuration().Servers) <= 1 {
		return
	}
	if n.raft.State() == raft.Leader {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer failed", "err", err)
		}
	}
	if err := n.gossip.Leave(2 * time.Second); err != nil {
		n.log.Warn("gossip leave", "err", err)
	}
	for ctx.Err() == nil {
		f := n.raft.GetConfiguration()
		if f.Error() != nil {
			return
		}
		in := false
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == n.cfg.NodeID {
				in = true
			}
		}
		if !in {
			n.log.Info("left the raft configuration")
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill stops the node at once, as a crash would, for tests: no drain, no leadership
// transfer, no gossip leave; the others find it dead. Its data dir keeps what it had
// committed, so Start on the same Config brings it back. It blocks until everything
// has stopped.
func (n *Node) Kill() {
	if !n.draining.CompareAndSwap(false, true) {
		return
	}
	if n.pool != nil {
		n.pool.kill()
		n.pool.wg.Wait()
		n.closeWorkerFiles()
	} else {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n.proxy.Shutdown(ctx)
	}
	n.admin.Close()
	close(n.stop)
	n.members.Stop()
	n.gossip.Shutdown()
	n.raft.Close()
	n.stopQuotas()
	n.wg.Wait()
}

// nodeID returns the configured id, or the one stored in the data dir, or a new one
// written there: a node keeps its identity across restarts.
func nodeID(cfg Config) (string, error) {
	path := filepath.Join(cfg.DataDir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		stored := strings.TrimSpace(string(b))
		if err := checkNodeID(stored); err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if cfg.NodeID != "" && cfg.NodeID != stored {
			return "", fmt.Errorf("node id %q does not match %q stored in %s: a data dir belongs to one node", cfg.NodeID, stored, path)
		}
		return stored, nil
	}
	id := cfg.NodeID
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s-%s", nodeIDSafe(host), randomHex(3))
	}
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write node id: %w", err)
	}
	return id, nil
}

// maxNodeID bounds a node id. The id names the node in raft, as its gossip member
// (its workers' names add a few bytes) and in every request id it makes; the
// cluster's UDP batches leave room for acknowledgements naming members of about this
// size, and no more.
const maxNodeID = 128

// checkNodeID says what is wrong with id, if anything: 1 to maxNodeID letters,
// digits, '.', '-' or '_', the characters of a host name, which a node id usually is.
func checkNodeID(id string) error {
	if id == "" || len(id) > maxNodeID {
		return fmt.Errorf("node id %q: %d bytes, want 1 to %d", id, len(id), maxNodeID)
	}
	for i := range len(id) {
		if !nodeIDByte(id[i]) {
			return fmt.Errorf("node id %q: %q at byte %d; want letters, digits, '.', '-' or '_' (it names the node in raft, gossip and request ids)", id, id[i], i)
		}
	}
	return nil
}

func nodeIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
}

// nodeIDSafe makes a host name into the start of a generated node id: what a node id
// may not hold becomes '-', and it is cut to leave room for the random suffix.
func nodeIDSafe(host string) string {
	b := []byte(host)
	for i, c := range b {
		if !nodeIDByte(c) {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "node"
	}
	return string(b[:min(len(b), maxNodeID-7)])
}

func adminToken(cfg Config) (string, error) {
	if cfg.AdminToken != "" {
		return cfg.AdminToken, nil
	}
	path := filepath.Join(cfg.DataDir, TokenFile)
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	t := randomHex(24)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	return t, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}
