package node

// The cluster test harness, in the manner of hashicorp/raft's testing.go: real nodes
// (node.Start, real raft over TCP, real memberlist) on loopback in one process, with
// kill, restart, partition, heal and state comparison. Every wait is bounded.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/fsm"
)

// TB is the part of testing.TB the harness uses (*testing.T and *testing.B have it),
// so that the node package does not import testing.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// ClusterOptions shape a test cluster.
type ClusterOptions struct {
	// Configure adjusts node i's config before its first start (timeouts, TLS...).
	Configure func(i int, cfg *Config)
	// Log receives every node's log and raft's; nil discards them (the environment
	// variable TOLLGATE_TEST_LOG=1 sends them to stderr).
	Log io.Writer
}

// TestCluster is a set of real nodes in this process. Its methods are safe for
// concurrent use; those that wait fail the test (Fatalf) when their time runs out.
type TestCluster struct {
	t        TB
	opts     ClusterOptions
	dataRoot string // each node's data dir is a directory in it

	mu    sync.Mutex
	nodes []*TestNode
}

// TestNode is one node of a TestCluster, up or down. Cfg is kept across restarts: the
// same data dir, raft and gossip addresses, id and admin token.
type TestNode struct {
	Index int
	Cfg   Config

	mu sync.Mutex
	n  *Node // nil while down
}

// TestToken is the admin token every node of a test cluster shares.
const TestToken = "tollgate-test-token"

// MakeCluster starts n nodes: the first bootstraps, the others join its gossip address.
// It returns once all are ready, the leader has them all in raft, and their states
// are equal. Every node is killed when the test ends.
func MakeCluster(t TB, n int, opts ClusterOptions) *TestCluster {
	t.Helper()
	if opts.Log == nil && os.Getenv("TOLLGATE_TEST_LOG") != "" {
		opts.Log = os.Stderr
	}
	// The data dirs' parent is made before Shutdown is registered: cleanups run last
	// first, so the dirs are removed after every node has stopped writing to them.
	c := &TestCluster{t: t, opts: opts, dataRoot: t.TempDir()}
	t.Cleanup(c.Shutdown)
	for range n {
		c.AddNode()
	}
	c.WaitReady(20 * time.Second)
	c.WaitRaftServers(n, 20*time.Second)
	// Followers forward writes with the cluster secret, which the first leader sets.
	c.wait(10*time.Second, func() bool {
		for _, tn := range c.Up() {
			if tn.Node().fsm.State().ClusterSecret == "" {
				return false
			}
		}
		return true
	}, func() string { return "the cluster secret is not everywhere: " + c.describe() })
	c.EnsureSame(10 * time.Second)
	return c
}

// Nodes returns every node, up or down, in the order they were added.
func (c *TestCluster) Nodes() []*TestNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*TestNode(nil), c.nodes...)
}

// Up returns the nodes that are running.
func (c *TestCluster) Up() []*TestNode {
	var out []*TestNode
	for _, tn := range c.Nodes() {
		if tn.Node() != nil {
			out = append(out, tn)
		}
	}
	return out
}

func freeLoopbackAddr(t TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// AddNode starts a new node that joins the running ones (or bootstraps a cluster when
// none runs). It does not wait for it to be ready.
func (c *TestCluster) AddNode() *TestNode {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	dataDir := filepath.Join(c.dataRoot, fmt.Sprintf("n%d", i))
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		c.t.Fatalf("data dir: %v", err)
	}
	cfg := Config{
		DataDir: dataDir, Listen: "127.0.0.1:0", Admin: "127.0.0.1:0",
		Raft: freeLoopbackAddr(c.t), Gossip: freeLoopbackAddr(c.t),
		NodeID: fmt.Sprintf("n%d", i), AdminToken: TestToken,
	}
	out := c.opts.Log
	if out == nil {
		out = io.Discard
	}
	cfg.Logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if c.opts.Log != nil {
		cfg.RaftLog = c.opts.Log
	}
	if c.opts.Configure != nil {
		c.opts.Configure(i, &cfg)
	}
	tn := &TestNode{Index: i, Cfg: cfg}
	// A port found free can be taken by another test process before the node binds
	// it; a new node can move to other ports, so try again a few times.
	for attempt := 1; ; attempt++ {
		err := c.tryStart(tn)
		if err == nil {
			break
		}
		if attempt < 5 && strings.Contains(err.Error(), "address already in use") {
			tn.Cfg.Raft, tn.Cfg.Gossip = freeLoopbackAddr(c.t), freeLoopbackAddr(c.t)
			continue
		}
		c.t.Fatalf("start node %s: %v", tn.Cfg.NodeID, err)
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, tn)
	c.mu.Unlock()
	return tn
}

func (c *TestCluster) start(tn *TestNode) {
	c.t.Helper()
	if err := c.tryStart(tn); err != nil {
		c.t.Fatalf("start node %s: %v", tn.Cfg.NodeID, err)
	}
}

// tryStart starts tn's node, joining the nodes that are up.
func (c *TestCluster) tryStart(tn *TestNode) error {
	cfg := tn.Cfg
	cfg.Join = nil
	for _, o := range c.Up() {
		if o != tn {
			cfg.Join = append(cfg.Join, o.Cfg.Gossip)
		}
	}
	n, err := Start(cfg)
	if err != nil {
		return err
	}
	tn.mu.Lock()
	tn.n = n
	tn.mu.Unlock()
	return nil
}

// Node returns the running node, or nil while it is down.
func (tn *TestNode) Node() *Node {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	return tn.n
}

// ID is the node's id.
func (tn *TestNode) ID() string { return tn.Cfg.NodeID }

// Client is an admin API client for the running node.
func (tn *TestNode) Client() *Client {
	n := tn.Node()
	if n == nil {
		panic("node " + tn.ID() + " is down")
	}
	return NewClient(n.AdminAddr(), TestToken)
}

// Kill stops tn as a crash would (Node.Kill): no leave, no leadership transfer.
func (c *TestCluster) Kill(tn *TestNode) {
	tn.mu.Lock()
	n := tn.n
	tn.n = nil
	tn.mu.Unlock()
	if n != nil {
		n.Kill()
	}
}

// Close stops tn cleanly (Node.Close): drain, hand over leadership, leave.
func (c *TestCluster) Close(tn *TestNode, timeout time.Duration) {
	c.t.Helper()
	tn.mu.Lock()
	n := tn.n
	tn.n = nil
	tn.mu.Unlock()
	if n == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		c.t.Logf("close %s: %v", tn.ID(), err)
	}
}

// Restart starts a stopped node again on its data dir and addresses, joining the
// running nodes. It does not wait for it to be ready.
func (c *TestCluster) Restart(tn *TestNode) {
	c.t.Helper()
	if tn.Node() != nil {
		c.t.Fatalf("restart %s: it is running", tn.ID())
	}
	c.start(tn)
}

// Shutdown kills every running node. MakeCluster registers it with t.Cleanup.
func (c *TestCluster) Shutdown() {
	var wg sync.WaitGroup
	for _, tn := range c.Up() {
		wg.Go(func() { c.Kill(tn) })
	}
	wg.Wait()
}

// Partition cuts the raft and gossip links between the given groups of nodes: a node
// reaches only the nodes of its own group; a running node in no group is cut off
// from all. Heal undoes it.
func (c *TestCluster) Partition(groups ...[]*TestNode) {
	group := map[*TestNode]int{}
	for gi, g := range groups {
		for _, tn := range g {
			group[tn] = gi + 1
		}
	}
	nodes := c.Nodes()
	for _, tn := range nodes {
		n := tn.Node()
		if n == nil {
			continue
		}
		cutRaft, cutGossip := map[string]bool{}, map[string]bool{}
		for _, o := range nodes {
			if o != tn && (group[tn] == 0 || group[o] != group[tn]) {
				cutRaft[o.Cfg.Raft] = true
				cutGossip[o.Cfg.Gossip] = true
			}
		}
		n.raft.Stream().SetDropFilter(func(addr string) bool { return cutRaft[addr] })
		n.gossip.SetDropFilter(func(addr string) bool { return cutGossip[addr] })
	}
}

// Heal removes every cut and has each running node rejoin the others' gossip at once.
func (c *TestCluster) Heal() {
	up := c.Up()
	for _, tn := range up {
		n := tn.Node()
		n.raft.Stream().SetDropFilter(nil)
		n.gossip.SetDropFilter(nil)
	}
	for _, tn := range up {
		var addrs []string
		for _, o := range up {
			if o != tn {
				addrs = append(addrs, o.Cfg.Gossip)
			}
		}
		if n := tn.Node(); n != nil && len(addrs) > 0 {
			n.gossip.Join(addrs)
		}
	}
}

// wait polls cond every 10 ms until it holds or timeout passes, then fails the test
// with what describe says.
func (c *TestCluster) wait(timeout time.Duration, cond func() bool, describe func() string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("after %v: %s", timeout, describe())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Leader returns the running node that leads, among nodes (default: all running ones),
// or nil when none does or more than one believes it does.
func (c *TestCluster) Leader(nodes ...*TestNode) *TestNode {
	if len(nodes) == 0 {
		nodes = c.Up()
	}
	var leader *TestNode
	for _, tn := range nodes {
		if n := tn.Node(); n != nil && n.raft.State() == raft.Leader {
			if leader != nil {
				return nil
			}
			leader = tn
		}
	}
	return leader
}

// WaitLeader waits until exactly one of nodes (default: all running ones) leads and the
// others among them that run follow it, and returns it.
func (c *TestCluster) WaitLeader(timeout time.Duration, nodes ...*TestNode) *TestNode {
	c.t.Helper()
	var leader *TestNode
	c.wait(timeout, func() bool {
		leader = c.Leader(nodes...)
		if leader == nil {
			return false
		}
		for _, tn := range nodes {
			if n := tn.Node(); n != nil {
				if _, id := n.raft.LeaderWithID(); string(id) != leader.ID() {
					return false
				}
			}
		}
		return true
	}, func() string { return "no single leader: " + c.describe() })
	return leader
}

// Followers returns the running nodes that do not lead.
func (c *TestCluster) Followers() []*TestNode {
	var out []*TestNode
	for _, tn := range c.Up() {
		if tn.Node().raft.State() != raft.Leader {
			out = append(out, tn)
		}
	}
	return out
}

// WaitReady waits until every running node (or those given) is ready.
func (c *TestCluster) WaitReady(timeout time.Duration, nodes ...*TestNode) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.Up()
	}
	c.wait(timeout, func() bool {
		for _, tn := range nodes {
			if n := tn.Node(); n == nil || !n.Ready() {
				return false
			}
		}
		return true
	}, func() string { return "not all ready: " + c.describe() })
}

// WaitRaftServers waits until the leader's raft configuration holds exactly want
// servers.
func (c *TestCluster) WaitRaftServers(want int, timeout time.Duration) {
	c.t.Helper()
	c.wait(timeout, func() bool {
		l := c.Leader()
		if l == nil {
			return false
		}
		f := l.Node().raft.GetConfiguration()
		return f.Error() == nil && len(f.Configuration().Servers) == want
	}, func() string { return fmt.Sprintf("raft does not have %d servers: %s", want, c.describe()) })
}

// RaftServers returns the ids in the raft configuration as node tn sees it.
func (c *TestCluster) RaftServers(tn *TestNode) []string {
	f := tn.Node().raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		ids = append(ids, string(s.ID))
	}
	return ids
}

// WaitApplied waits until every running node has applied index.
func (c *TestCluster) WaitApplied(index uint64, timeout time.Duration) {
	c.t.Helper()
	c.wait(timeout, func() bool {
		// Raft's applied index runs ahead of the FSM (it counts entries handed to
		// it), so every FSM must also have reached the last state change at or before
		// index that any node has applied (the writer's, at least).
		var stateTarget uint64
		for _, tn := range c.Up() {
			n := tn.Node()
			if n == nil || n.appliedIndex() < index {
				return false
			}
			if si := n.fsm.State().Index; si <= index {
				stateTarget = max(stateTarget, si)
			}
		}
		for _, tn := range c.Up() {
			if n := tn.Node(); n == nil || n.fsm.AppliedIndex() < stateTarget {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("not all applied %d: %s", index, c.describe()) })
}

// AppliedIndex is the last raft index tn applied.
func (tn *TestNode) AppliedIndex() uint64 { return tn.Node().appliedIndex() }

// snapshotBytes encodes tn's FSM state as a snapshot: equal bytes, equal states.
func snapshotBytes(tn *TestNode) []byte {
	var b bytes.Buffer
	if err := fsm.WriteSnapshot(&b, tn.Node().fsm.State()); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// EnsureSame waits until every running node's FSM holds the same state, byte for byte
// as a snapshot encodes it (index included), and fails the test if they never do.
func (c *TestCluster) EnsureSame(timeout time.Duration) {
	c.t.Helper()
	c.wait(timeout, func() bool {
		up := c.Up()
		if len(up) == 0 {
			return true
		}
		first := snapshotBytes(up[0])
		for _, tn := range up[1:] {
			if !bytes.Equal(first, snapshotBytes(tn)) {
				return false
			}
		}
		return true
	}, func() string { return "FSM states differ: " + c.describe() })
}

// describe says, per node, whether it runs, its raft state, leader, indexes and state.
func (c *TestCluster) describe() string {
	var b strings.Builder
	for _, tn := range c.Nodes() {
		n := tn.Node()
		if n == nil {
			fmt.Fprintf(&b, "[%s down] ", tn.ID())
			continue
		}
		_, lid := n.raft.LeaderWithID()
		fmt.Fprintf(&b, "[%s %s leader=%s applied=%d state=%d ready=%v provisional=%v raft=%v] ",
			tn.ID(), n.raft.State(), lid, n.appliedIndex(), n.fsm.State().Index, n.Ready(), n.Provisional(), c.RaftServers(tn))
	}
	return b.String()
}

// TestBundle is a config of one group g with apis mock APIs a0, a1, ... (GET /aN,
// anonymous, deployed to RELEASE, answering "aN") and one app, app: enough to write
// independent grants (app → g/aN) and to call through the data plane.
func TestBundle(apis int) *fsm.Bundle {
	g := fsm.GroupSpec{Name: "g"}
	for i := range apis {
		name := fmt.Sprintf("a%d", i)
		g.APIs = append(g.APIs, fsm.APISpec{Name: name, APIDef: fsm.APIDef{
			Method: "GET", Path: "/" + name, Auth: fsm.AuthAnonymous,
			Backend: fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: name},
		}, Deploy: []fsm.Stage{fsm.StageRelease}})
	}
	return &fsm.Bundle{Groups: []fsm.GroupSpec{g}, Apps: []fsm.AppSpec{{Name: "app", Owner: "test"}}}
}

// Grant writes a grant of app to API g/aN through tn's admin API.
func (tn *TestNode) Grant(ctx context.Context, i int) error {
	g := fsm.GrantSpec{App: "app", API: fmt.Sprintf("g/a%d", i), Stages: []fsm.Stage{fsm.StageRelease}}
	return tn.Client().Do(ctx, "POST", "/v1/grants", &g, nil)
}

// TestCA writes a CA and, for each name, a certificate and key it signs into dir, as
// PEM files: ca.pem, NAME.pem, NAME-key.pem. It returns the CA file's path.
func TestCA(t TB, dir string, names ...string) string {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("CA key: %v", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tollgate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("CA: %v", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	write("ca.pem", "CERTIFICATE", caDER)
	for i, name := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatalf("key: %v", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("certificate %s: %v", name, err)
		}
		kd, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatalf("key %s: %v", name, err)
		}
		write(name+".pem", "CERTIFICATE", der)
		write(name+"-key.pem", "EC PRIVATE KEY", kd)
	}
	return filepath.Join(dir, "ca.pem")
}
