package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

// callData calls API g/aN on tn's data plane and returns the status and body.
func callData(t *testing.T, tn *TestNode, i int) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+tn.Node().DataAddr()+fmt.Sprintf("/a%d", i), nil)
	req.Host = "g.localhost"
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("call %s: %v", tn.ID(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// retry503 runs an idempotent write until it succeeds, retrying (for up to 10 s) while
// it answers 503: under a loaded machine (the race detector, tests in parallel) an
// election can happen at any time, and a client retries then.
func retry503(t *testing.T, what string, write func(context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := write(ctx)
		cancel()
		var ae *APIError
		if err == nil {
			return
		}
		if !errors.As(err, &ae) || ae.Status != 503 || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func applyBundle(t *testing.T, tn *TestNode, b *fsm.Bundle) {
	t.Helper()
	retry503(t, "apply on "+tn.ID(), func(ctx context.Context) error {
		_, err := tn.Client().Apply(ctx, b, false)
		return err
	})
}

func grant(t *testing.T, tn *TestNode, i int) {
	t.Helper()
	retry503(t, fmt.Sprintf("grant %d on %s", i, tn.ID()), func(ctx context.Context) error { return tn.Grant(ctx, i) })
}

// waitServedUp waits until every running node's data plane serves the state it has
// applied: WaitApplied does not cover that, the data plane compiles a state just after.
func waitServedUp(t *testing.T, c *TestCluster) {
	t.Helper()
	for _, tn := range c.Up() {
		if !tn.Node().waitServed(tn.Node().fsm.State().Index, 5*time.Second) {
			t.Fatalf("%s does not serve the state it applied", tn.ID())
		}
	}
}

func hasGrant(n *Node, i int) bool {
	_, ok := n.fsm.State().Grants[fsm.GrantKey("app", fmt.Sprintf("g/a%d", i))]
	return ok
}

// A 3-node cluster: a write on a follower is served by every node; a follower that
// leaves is removed from raft at once; the leader's loss elects another, writes go on
// and nothing acknowledged is lost, also on the old leader once it is back.
func TestCluster3_WriteLeaveLeaderLoss(t *testing.T) {
	c := MakeCluster(t, 4, ClusterOptions{})
	leader := c.WaitLeader(5 * time.Second)
	f := c.Followers()[0]

	// A write on a follower: acknowledged once committed, then served by all.
	applyBundle(t, f, TestBundle(20))
	if f.Node().State().Deployments[fsm.DeploymentKey("g/a3", fsm.StageRelease)].Current == 0 {
		t.Fatal("the follower does not serve its own acknowledged write")
	}
	c.WaitApplied(f.AppliedIndex(), 5*time.Second)
	waitServedUp(t, c)
	for _, tn := range c.Up() {
		if code, body := callData(t, tn, 3); code != 200 || body != "a3" {
			t.Fatalf("%s serves g/a3 as %d %q", tn.ID(), code, body)
		}
	}

	// Leave: a follower that closes is out of raft at once (not after DeadGrace).
	leaving := c.Followers()[1]
	start := time.Now()
	c.Close(leaving, 10*time.Second)
	c.WaitRaftServers(3, 5*time.Second)
	t.Logf("clean leave took %v", time.Since(start))

	// Leader loss.
	var acked []int
	for i := range 5 {
		grant(t, c.Followers()[0], i)
		acked = append(acked, i)
	}
	c.Kill(leader)
	killed := time.Now()
	newLeader := c.WaitLeader(5 * time.Second)
	if newLeader == leader {
		t.Fatal("the killed node still leads")
	}
	for i := 5; i < 10; i++ {
		grant(t, c.Up()[i%2], i)
		acked = append(acked, i)
	}
	t.Logf("leader kill to a new leader committing: %v", time.Since(killed))
	for _, tn := range c.Up() {
		c.WaitApplied(newLeader.AppliedIndex(), 5*time.Second)
		for _, i := range acked {
			if !hasGrant(tn.Node(), i) {
				t.Fatalf("acknowledged grant %d missing on %s", i, tn.ID())
			}
		}
	}
	c.Restart(leader)
	c.WaitReady(10*time.Second, leader)
	for _, i := range acked {
		if !hasGrant(leader.Node(), i) {
			t.Fatalf("acknowledged grant %d missing on the restarted old leader", i)
		}
	}
	c.EnsureSame(5 * time.Second)
}

// A 5-node cluster split 2/3 with the leader in the minority: the minority cannot
// commit, the majority elects a leader and goes on, and after healing every FSM is
// equal, without the writes the minority refused.
func TestCluster5_PartitionMinorityCannotCommit(t *testing.T) {
	c := MakeCluster(t, 5, ClusterOptions{})
	leader := c.WaitLeader(5 * time.Second)
	applyBundle(t, leader, TestBundle(10))
	c.WaitApplied(leader.AppliedIndex(), 5*time.Second)

	minority := []*TestNode{leader}
	var majority []*TestNode
	for _, tn := range c.Up() {
		if tn == leader {
			continue
		}
		if len(minority) < 2 {
			minority = append(minority, tn)
		} else {
			majority = append(majority, tn)
		}
	}
	c.Partition(minority, majority)

	// The minority: every write fails with an error, in bounded time, and is not applied.
	for _, tn := range minority {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := tn.Grant(ctx, 1)
		cancel()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 503 {
			t.Fatalf("a write on the minority's %s: got %v, want a 503", tn.ID(), err)
		}
	}
	newLeader := c.WaitLeader(5*time.Second, majority...)
	grant(t, majority[0], 2)
	// Reads in the minority still answer, marked stale once it knows no leader.
	c.wait(5*time.Second, func() bool {
		_, id := minority[1].Node().raft.LeaderWithID()
		return id == ""
	}, func() string { return "the minority still knows a leader: " + c.describe() })
	req, _ := http.NewRequest("GET", "http://"+minority[1].Node().AdminAddr()+"/v1/apis", nil)
	req.Header.Set("Authorization", "Bearer "+TestToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(staleHeader) != "true" {
		t.Fatalf("a read in the minority: %d, stale=%q", resp.StatusCode, resp.Header.Get(staleHeader))
	}
	if code, body := callData(t, minority[0], 4); code != 200 || body != "a4" {
		t.Fatalf("the minority's data plane: %d %q", code, body)
	}

	c.Heal()
	c.WaitLeader(10 * time.Second)
	c.WaitApplied(newLeader.AppliedIndex(), 10*time.Second)
	c.EnsureSame(10 * time.Second)
	for _, tn := range c.Up() {
		if hasGrant(tn.Node(), 1) || !hasGrant(tn.Node(), 2) {
			t.Fatalf("%s: grant 1 (refused) %v, grant 2 (acknowledged) %v", tn.ID(), hasGrant(tn.Node(), 1), hasGrant(tn.Node(), 2))
		}
	}
}

// Raft over mutual TLS: nodes with certificates from the cluster CA form a cluster; a
// node without them joins gossip but is never added to raft nor ready.
func TestClusterRaftMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := TestCA(t, dir, "n0", "n1")
	c := MakeCluster(t, 2, ClusterOptions{Configure: func(i int, cfg *Config) {
		if i >= 2 {
			return // the plain node added below
		}
		cfg.RaftTLSCA = ca
		cfg.RaftTLSCert = filepath.Join(dir, fmt.Sprintf("n%d.pem", i))
		cfg.RaftTLSKey = filepath.Join(dir, fmt.Sprintf("n%d-key.pem", i))
	}})
	leader := c.WaitLeader(5 * time.Second)
	applyBundle(t, c.Followers()[0], TestBundle(3))
	c.EnsureSame(5 * time.Second)

	plain := c.AddNode() // no certificates
	time.Sleep(2 * time.Second)
	if plain.Node().Ready() {
		t.Fatal("a node without the cluster's certificates became ready")
	}
	if ids := c.RaftServers(leader); len(ids) != 2 {
		t.Fatalf("raft servers %v: the plain node was added", ids)
	}
	if _, err := os.Stat(ca); err != nil {
		t.Fatal(err)
	}
	c.Kill(plain)
	// The TLS cluster still commits.
	grant(t, leader, 1)
}

// The reverse mismatch: a node WITH raft TLS joining a cluster WITHOUT it. A plain TCP
// connect to its TLS listener succeeds, so the leader's probe alone would pass it; its
// published NodeMeta.RaftTLS makes the leader refuse it. It must never be added to
// raft (with two plain voters, an unreachable third voter would make every commit need
// both of them) nor become ready.
func TestClusterRaftTLSNodeJoiningPlainCluster(t *testing.T) {
	dir := t.TempDir()
	ca := TestCA(t, dir, "n2")
	c := MakeCluster(t, 2, ClusterOptions{Configure: func(i int, cfg *Config) {
		if i == 2 {
			cfg.RaftTLSCA = ca
			cfg.RaftTLSCert = filepath.Join(dir, "n2.pem")
			cfg.RaftTLSKey = filepath.Join(dir, "n2-key.pem")
		}
	}})
	leader := c.WaitLeader(5 * time.Second)
	applyBundle(t, c.Followers()[0], TestBundle(3))

	withTLS := c.AddNode()
	// The leader reconciles every 250ms and on every gossip event: 2 s is many passes.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if ids := c.RaftServers(leader); len(ids) != 2 {
			t.Fatalf("raft servers %v: the node with raft TLS was added to a plain cluster", ids)
		}
		if withTLS.Node().Ready() {
			t.Fatal("a node with raft TLS became ready in a cluster without it")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// It is in gossip all the same (so the refusal is the leader's, not a failed join).
	inGossip := false
	for _, m := range leader.Node().gossip.Members() {
		if m.Meta.ID == withTLS.ID() {
			inGossip = m.Meta.RaftTLS
		}
	}
	if !inGossip {
		t.Fatal("the node with raft TLS is not in the leader's gossip view with RaftTLS set")
	}
	// The plain cluster still commits, with and after it.
	grant(t, leader, 1)
	c.Kill(withTLS)
	grant(t, c.Followers()[0], 2)
}

// Snapshots compact the log; a new node far behind catches up from a snapshot and
// serves everything.
func TestClusterSnapshotCatchUp(t *testing.T) {
	c := MakeCluster(t, 3, ClusterOptions{Configure: func(i int, cfg *Config) {
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.SnapshotThreshold = 16
		cfg.TrailingLogs = 4
	}})
	leader := c.WaitLeader(5 * time.Second)
	applyBundle(t, leader, TestBundle(60))
	for i := range 60 {
		grant(t, leader, i)
	}
	c.wait(10*time.Second, func() bool {
		idx, _ := strconv.ParseUint(leader.Node().raft.Stats()["last_snapshot_index"], 10, 64)
		first, _ := leader.Node().raft.FirstLogIndex()
		return idx > 40 && first > 1
	}, func() string { return "no snapshot/compaction: " + fmt.Sprint(leader.Node().raft.Stats()) })

	fresh := c.AddNode()
	c.WaitReady(15*time.Second, fresh)
	if idx, _ := strconv.ParseUint(fresh.Node().raft.Stats()["last_snapshot_index"], 10, 64); idx == 0 {
		t.Fatalf("the new node did not install a snapshot: %v", fresh.Node().raft.Stats())
	}
	c.EnsureSame(5 * time.Second)
	for i := range 60 {
		if !hasGrant(fresh.Node(), i) {
			t.Fatalf("grant %d missing on the new node", i)
		}
	}
	if code, body := callData(t, fresh, 59); code != 200 || body != "a59" {
		t.Fatalf("the new node serves g/a59 as %d %q", code, body)
	}
}

// Quorum lost (two of three killed): the survivor serves traffic, refuses writes with
// a clear error and serves reads marked stale. Restarted alone, it serves its own
// snapshot and log (provisionally); once the others are back it serves the committed
// state and every FSM is equal.
func TestClusterQuorumLoss(t *testing.T) {
	c := MakeCluster(t, 3, ClusterOptions{Configure: func(i int, cfg *Config) {
		cfg.ProvisionalWait = 500 * time.Millisecond
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.SnapshotThreshold = 8 // a snapshot, then entries after it in the log
		cfg.TrailingLogs = 2
	}})
	leader := c.WaitLeader(5 * time.Second)
	applyBundle(t, leader, TestBundle(40))
	for i := range 12 {
		grant(t, leader, i)
	}
	c.WaitApplied(leader.AppliedIndex(), 5*time.Second)
	waitServedUp(t, c)
	survivor := c.Followers()[0]
	for _, tn := range c.Up() {
		if tn != survivor {
			c.Kill(tn)
		}
	}

	checkDegraded := func(what string) {
		t.Helper()
		if code, body := callData(t, survivor, 7); code != 200 || body != "a7" {
			t.Fatalf("%s: the data plane answers %d %q", what, code, body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := survivor.Grant(ctx, 20)
		cancel()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 503 || !strings.Contains(ae.Message, "quorum") {
			t.Fatalf("%s: a write answers %v, want a 503 saying the quorum is lost", what, err)
		}
		req, _ := http.NewRequest("GET", "http://"+survivor.Node().AdminAddr()+"/v1/grants", nil)
		req.Header.Set("Authorization", "Bearer "+TestToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get(staleHeader) != "true" || !strings.Contains(string(body), "g/a11") {
			t.Fatalf("%s: a read answers %d stale=%q", what, resp.StatusCode, resp.Header.Get(staleHeader))
		}
		resp, err = http.Get("http://" + survivor.Node().AdminAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get(staleHeader) != "true" {
			t.Fatalf("%s: /readyz answers %d stale=%q", what, resp.StatusCode, resp.Header.Get(staleHeader))
		}
	}
	c.wait(5*time.Second, func() bool {
		_, id := survivor.Node().raft.LeaderWithID()
		return id == ""
	}, func() string { return "the survivor still has a leader: " + c.describe() })
	checkDegraded("quorum lost")

	// Restarted alone, it serves its own snapshot and log.
	c.Kill(survivor)
	c.Restart(survivor)
	c.WaitReady(5*time.Second, survivor)
	if !survivor.Node().Provisional() {
		t.Fatalf("restarted without quorum, the node is ready but not provisional: %s", c.describe())
	}
	for i := range 12 {
		if _, ok := survivor.Node().State().Grants[fsm.GrantKey("app", fmt.Sprintf("g/a%d", i))]; !ok {
			t.Fatalf("the provisional state lacks grant %d", i)
		}
	}
	checkDegraded("restarted without quorum")

	// The others come back: a leader, the committed state, equal everywhere.
	var wg sync.WaitGroup
	for _, tn := range c.Nodes() {
		if tn != survivor {
			c.Restart(tn)
		}
	}
	wg.Wait()
	c.WaitLeader(10 * time.Second)
	c.wait(10*time.Second, func() bool { return !survivor.Node().Provisional() },
		func() string { return "still provisional: " + c.describe() })
	grant(t, survivor, 30)
	c.EnsureSame(10 * time.Second)
}
