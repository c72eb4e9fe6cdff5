package ratelimit_test

// These tests run real limiters over real memberlist instances (cluster.Gossip) on
// loopback. The test package may import cluster; package ratelimit itself does not.

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/cluster"
	"github.com/tollgate/tollgate/ratelimit"
)

// countingTransport counts the batches a node sends, to check the message rate, and
// keeps the largest.
type countingTransport struct {
	*cluster.Gossip
	sends   atomic.Int64
	largest atomic.Int64
}

func (c *countingTransport) SendToAll(ch byte, msg []byte) error {
	c.sends.Add(1)
	for n := int64(len(msg)); ; {
		if m := c.largest.Load(); n <= m || c.largest.CompareAndSwap(m, n) {
			break
		}
	}
	return c.Gossip.SendToAll(ch, msg)
}

type node struct {
	name string
	g    *cluster.Gossip
	tr   *countingTransport
	l    *ratelimit.Limiter
	ns   *ratelimit.NonceStore
	once sync.Once
}

// kill stops the node without a Leave, as a crash would (the limiter's last flush
// still goes out; a real kill -9 would lose up to one flush interval of counts).
func (n *node) kill() {
	n.once.Do(func() {
		n.l.Close()
		n.ns.Close()
		_ = n.g.Shutdown()
	})
}

var testPolicies = []ratelimit.Policy{
	{Name: "basic", Window: ratelimit.Day, API: 1000, App: 200, User: 600,
		Special: []ratelimit.Special{{App: "vip", Limit: 500}, {User: "bob", Limit: 100}}},
	{Name: "big", Window: ratelimit.Day, API: 10000},
}

func startNode(t *testing.T, name string, join string) *node {
	t.Helper()
	g, err := cluster.NewGossip(cluster.GossipConfig{NodeName: name, BindAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, g: g, tr: &countingTransport{Gossip: g}}
	if n.l, err = ratelimit.New(ratelimit.Config{Transport: n.tr}); err != nil {
		t.Fatal(err)
	}
	if err := n.l.SetPolicies(testPolicies); err != nil {
		t.Fatal(err)
	}
	if n.ns, err = ratelimit.NewNonceStore(ratelimit.NonceConfig{Transport: n.tr}); err != nil {
		t.Fatal(err)
	}
	// As the node does: an idle limiter's loop sleeps, and learns of a member that came
	// from the event, not from its next flush up to 100 ms later.
	g.OnEvent(func(cluster.MemberEvent) { n.l.MembersChanged() })
	if join != "" {
		if _, err := g.Join([]string{join}); err != nil {
			t.Fatal(err)
		}
	}
	n.l.Start()
	n.ns.Start()
	t.Cleanup(n.kill)
	return n
}

func startNodes(t *testing.T, count int) []*node {
	t.Helper()
	ns := []*node{startNode(t, "n1", "")}
	for i := 2; i <= count; i++ {
		ns = append(ns, startNode(t, fmt.Sprintf("n%d", i), ns[0].g.Addr()))
	}
	waitUntil(t, 3*time.Second, "membership", func() bool {
		for _, n := range ns {
			if n.g.NumMembers() != count {
				return false
			}
		}
		return true
	})
	time.Sleep(20 * time.Millisecond) // a couple of flushes: every limiter sees N
	return ns
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
}

func tolerance(limit int64) int64 { return max(int64(math.Ceil(float64(limit)/100)), 2) }

// load sends calls for one key round-robin over the given nodes from several
// goroutines, paced so that counts are exchanged while the quota runs out. It stops
// after calls calls and at least minDur, and returns how many were admitted.
func load(nodes []*node, policy string, dim ratelimit.Dimension, subject string, calls int, minDur time.Duration, pace time.Duration) int64 {
	var admitted, next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 6 {
		wg.Go(func() {
			for i := w; ; i++ {
				k := next.Add(1)
				if k > int64(calls) && time.Since(start) >= minDur {
					return
				}
				if k > int64(calls)*20 { // hard bound on the loop
					return
				}
				n := nodes[int(k)%len(nodes)]
				h := n.l.Handle(policy, dim, subject, false)
				if ok, _ := n.l.Allow(h, time.Now()); ok {
					admitted.Add(1)
				}
				if pace > 0 {
					time.Sleep(pace)
				}
			}
		})
	}
	wg.Wait()
	return admitted.Load()
}

// converged waits until every node counts want calls on the key.
func converged(t *testing.T, nodes []*node, policy string, dim ratelimit.Dimension, subject string, want int64) {
	t.Helper()
	convergedWithin(t, 3*time.Second, nodes, policy, dim, subject, want)
}

// convergedWithin is converged with its own bound.
func convergedWithin(t *testing.T, within time.Duration, nodes []*node, policy string, dim ratelimit.Dimension, subject string, want int64) {
	t.Helper()
	waitUntil(t, within, fmt.Sprintf("every node to count %d on %s/%s", want, dim, subject), func() bool {
		for _, n := range nodes {
			if n.l.Count(n.l.Handle(policy, dim, subject, false), time.Now()) != want {
				return false
			}
		}
		return true
	})
}

// TestClusterBatchesFitAPacketWithManyMembers: every member's batch acknowledges the
// others by name, and a batch over one UDP packet goes by a TCP connection of its own.
// With 16 members of 90-character names (a node id from a long host name, its
// workers' names longer still) the acknowledgements alone were 1.4 KB: every batch of
// every member, every 5 ms under load, went by TCP to each of the others. A batch now
// acknowledges as many as fit, the ones it owes first, and the others in the next.
// The quota still holds exactly, and used nonces still reach every member.
//
// Sixteen members under the race detector, beside every other package's race-built
// tests on two CPUs, starve: their probes time out, members flap, and a refill waits
// for the flapped member's acknowledgement (calls refused meanwhile, as designed).
// That failed this test in three whole runs of six on 2026-12-07 (a wait past 3 s
// twice, 2,999 of 3,000 admitted once) and never alone, so it runs in make test's
// test-large pass, without the detector and alone.
func TestClusterLargeMembershipBatchesFitAPacket(t *testing.T) {
	if raceEnabled {
		t.Skip("16 members starve under the race detector: make test runs this without it (test-large)")
	}
	const members = 16
	name := func(i int) string { return fmt.Sprintf("%s-%02d", strings.Repeat("long-host-name-", 5)+"xxxxxx", i) }
	nodes := []*node{startNode(t, name(0), "")}
	for i := 1; i < members; i++ {
		nodes = append(nodes, startNode(t, name(i), nodes[0].g.Addr()))
	}
	waitUntil(t, 10*time.Second, "membership", func() bool {
		for _, n := range nodes {
			if n.g.NumMembers() != members {
				return false
			}
		}
		return true
	})
	// Every member counts on one key, so each hears entries from every other and owes
	// each an acknowledgement.
	const limit = 10000
	admitted := load(nodes, "big", ratelimit.DimAPI, "many", 3000, 0, time.Millisecond)
	if admitted != 3000 {
		t.Fatalf("admitted %d of 3000 under a limit of %d", admitted, limit)
	}
	// It converges in milliseconds and the nonces below arrive in 0.1-0.2 s; the
	// waits are as long as for the membership all the same.
	convergedWithin(t, 10*time.Second, nodes, "big", ratelimit.DimAPI, "many", 3000)
	// And nonces: every member uses some, so each acknowledges every other's batches.
	for i, n := range nodes {
		for k := range 300 {
			n.ns.Use(fmt.Appendf(nil, "many-%d-%d", i, k), time.Now())
		}
	}
	last := nodes[members-1]
	waitUntil(t, 10*time.Second, "the first member's nonces to reach the last", func() bool {
		return last.ns.Seen([]byte("many-0-299"), time.Now())
	})
	const packet = 1199 // cluster.udpPayloadMax less the channel byte
	for _, n := range nodes {
		if got := n.tr.largest.Load(); got > packet {
			t.Errorf("%s sent a batch of %d bytes; one UDP packet takes %d", n.name, got, packet)
		}
	}
}

func TestClusterQuotasRoundRobin(t *testing.T) {
	nodes := startNodes(t, 3)
	cases := []struct {
		name    string
		policy  string
		dim     ratelimit.Dimension
		subject string
		limit   int64
		pace    time.Duration
	}{
		{"api", "basic", ratelimit.DimAPI, "weather/city", 1000, 300 * time.Microsecond},
		{"app", "basic", ratelimit.DimApp, "web", 200, time.Millisecond},
		{"user", "basic", ratelimit.DimUser, "alice", 600, 500 * time.Microsecond},
		{"special app", "basic", ratelimit.DimApp, "vip", 500, 500 * time.Microsecond},
		{"special user", "basic", ratelimit.DimUser, "bob", 100, time.Millisecond},
		{"api burst", "big", ratelimit.DimAPI, "orders", 10000, 0},
	}
	sendsBefore := make([]int64, len(nodes))
	for i, n := range nodes {
		sendsBefore[i] = n.tr.sends.Load()
	}
	start := time.Now()
	var wg sync.WaitGroup
	got := make([]int64, len(cases))
	for i, c := range cases { // all keys at once: the nodes are busy with several
		wg.Go(func() {
			got[i] = load(nodes, c.policy, c.dim, c.subject, int(c.limit)*3, 200*time.Millisecond, c.pace)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for i, c := range cases {
		d := got[i] - c.limit
		t.Logf("%-12s limit %5d admitted %5d (%+d)", c.name, c.limit, got[i], d)
		if d > tolerance(c.limit) || -d > tolerance(c.limit) {
			t.Errorf("%s: admitted %d, want %d ± %d", c.name, got[i], c.limit, tolerance(c.limit))
		}
		converged(t, nodes, c.policy, c.dim, c.subject, got[i])
	}
	// The message rate is bounded by the flush interval, not by the load.
	for i, n := range nodes {
		sent := n.tr.sends.Load() - sendsBefore[i]
		perSec := float64(sent) / elapsed.Seconds()
		t.Logf("%s sent %d batches in %v (%.0f/s, counts and nonces)", n.name, sent, elapsed.Round(time.Millisecond), perSec)
		if perSec > 2*(1000/5+1000) { // counts every 5ms, nonces every 1ms (none here)
			t.Errorf("%s sent %.0f batches/s", n.name, perSec)
		}
	}
}

func TestClusterQuotaNodeKilledMidway(t *testing.T) {
	nodes := startNodes(t, 3)
	const limit = 1000
	var admitted atomic.Int64
	// First half on all three nodes.
	admitted.Add(load(nodes, "basic", ratelimit.DimAPI, "k", limit/2, 0, 200*time.Microsecond))
	nodes[2].kill()
	// The rest on the survivors, long enough for the dead node to be noticed (~1 s):
	// until then a part of the remainder is reserved for it.
	admitted.Add(load(nodes[:2], "basic", ratelimit.DimAPI, "k", 2*limit, 1500*time.Millisecond, 500*time.Microsecond))
	got := admitted.Load()
	t.Logf("admitted %d of %d with a node killed midway", got, limit)
	if d := got - limit; d > tolerance(limit) || -d > tolerance(limit) {
		t.Errorf("admitted %d, want %d ± %d", got, limit, tolerance(limit))
	}
	// The dead node's counts still count on the survivors.
	converged(t, nodes[:2], "basic", ratelimit.DimAPI, "k", got)
}

func TestClusterPartitionAndHeal(t *testing.T) {
	nodes := startNodes(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	// Cut a from b and c (both directions, memberlist's own traffic included).
	bc := map[string]bool{b.g.Addr(): true, c.g.Addr(): true}
	a.g.SetDropFilter(func(addr string) bool { return bc[addr] })
	aAddr := a.g.Addr()
	b.g.SetDropFilter(func(addr string) bool { return addr == aAddr })
	c.g.SetDropFilter(func(addr string) bool { return addr == aAddr })
	waitUntil(t, 5*time.Second, "each side to drop the other", func() bool {
		return a.g.NumMembers() == 1 && b.g.NumMembers() == 2 && c.g.NumMembers() == 2
	})
	time.Sleep(20 * time.Millisecond)

	const limit = 600 // user alice
	var sideA, sideBC int64
	var wg sync.WaitGroup
	wg.Go(func() {
		sideA = load([]*node{a}, "basic", ratelimit.DimUser, "alice", 2*limit, 200*time.Millisecond, 500*time.Microsecond)
	})
	wg.Go(func() {
		sideBC = load([]*node{b, c}, "basic", ratelimit.DimUser, "alice", 2*limit, 200*time.Millisecond, 500*time.Microsecond)
	})
	wg.Wait()
	t.Logf("partition: side a admitted %d, side b+c admitted %d (limit %d per side)", sideA, sideBC, limit)
	for side, got := range map[string]int64{"a": sideA, "b+c": sideBC} {
		if got > limit+tolerance(limit) {
			t.Errorf("side %s admitted %d, more than the quota %d (+%d)", side, got, limit, tolerance(limit))
		}
		if got < limit-tolerance(limit) {
			t.Errorf("side %s admitted only %d of %d", side, got, limit)
		}
	}

	// Heal: reconnect and exchange state, as a rejoin after a partition does.
	for _, n := range nodes {
		n.g.SetDropFilter(nil)
	}
	if _, err := a.g.Join([]string{b.g.Addr(), c.g.Addr()}); err != nil {
		t.Fatal(err)
	}
	// Every node counts both sides exactly once: max per node id, no double count.
	converged(t, nodes, "basic", ratelimit.DimUser, "alice", sideA+sideBC)
	// And nothing more is admitted in this window.
	if got := load(nodes, "basic", ratelimit.DimUser, "alice", 30, 0, 0); got != 0 {
		t.Errorf("after heal admitted %d more", got)
	}
}

func TestClusterJoinLearnsCountsBeforeAdmitting(t *testing.T) {
	nodes := startNodes(t, 2)
	got := load(nodes, "basic", ratelimit.DimApp, "web", 150, 0, 200*time.Microsecond)
	converged(t, nodes, "basic", ratelimit.DimApp, "web", got)
	late := startNode(t, "n9", nodes[0].g.Addr()) // Join returns after push/pull
	if n := late.l.Count(late.l.Handle("basic", ratelimit.DimApp, "web", false), time.Now()); n != got {
		t.Fatalf("joined node counts %d right after Join, want %d", n, got)
	}
}

func TestClusterNonceReplayRefusedOnOtherNodes(t *testing.T) {
	nodes := startNodes(t, 3)
	const count = 300
	var lat []time.Duration
	for i := range count {
		nonce := fmt.Appendf(nil, "9f0c8a4e-%04d-4d2b-9a53-6c1f2b7e%04d", i, i)
		src, dsts := nodes[i%3], []*node{nodes[(i+1)%3], nodes[(i+2)%3]}
		start := time.Now()
		if !src.ns.Use(nonce, start) {
			t.Fatalf("nonce %d refused on first use", i)
		}
		if src.ns.Use(nonce, time.Now()) {
			t.Fatalf("nonce %d accepted twice on the same node", i)
		}
		for _, d := range dsts {
			waitUntil(t, time.Second, "nonce to arrive", func() bool { return d.ns.Seen(nonce, time.Now()) })
		}
		lat = append(lat, time.Since(start))
		for _, d := range dsts {
			if d.ns.Use(nonce, time.Now()) {
				t.Fatalf("nonce %d replayed on %s", i, d.name)
			}
		}
		time.Sleep(time.Duration(i%3) * time.Millisecond) // vary the phase against the flush
	}
	slices.Sort(lat)
	p50, p99 := lat[count/2], lat[count*99/100]
	t.Logf("nonce known on every other node after p50 %v, p99 %v, max %v", p50, p99, lat[count-1])
	// Aim: 10 ms. Asserted with headroom for a shared 2-core machine, and not under the
	// race detector; every nonce must arrive either way (waitUntil above).
	if !raceEnabled && p99 > 20*time.Millisecond {
		t.Errorf("p99 %v, aim 10ms", p99)
	}
	// A node that joins now knows every nonce already used.
	late := startNode(t, "n9", nodes[0].g.Addr())
	if late.ns.Use(fmt.Appendf(nil, "9f0c8a4e-%04d-4d2b-9a53-6c1f2b7e%04d", 7, 7), time.Now()) {
		t.Error("a joined node accepted a nonce used before it joined")
	}
}

// TestClusterNonceUsedWhileJoiningReachesJoiner: a node alone for a while queues no
// nonce for gossip; one that joins while it is taking signed calls still learns every
// nonce used before, during and after the join (by the join's state exchange or by
// gossip), so none can be replayed on it.
func TestClusterNonceUsedWhileJoiningReachesJoiner(t *testing.T) {
	first := startNode(t, "n1", "")
	time.Sleep(1500 * time.Millisecond) // past aloneAfter: first stops queueing

	var (
		mu   sync.Mutex
		used [][]byte
		stop = make(chan struct{})
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; i < 200_000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			nonce := fmt.Appendf(nil, "join-%06d", i)
			if first.ns.Use(nonce, time.Now()) {
				mu.Lock()
				used = append(used, nonce)
				mu.Unlock()
			}
			time.Sleep(50 * time.Microsecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	late := startNode(t, "n2", first.g.Addr())
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done

	mu.Lock()
	defer mu.Unlock()
	if len(used) < 100 {
		t.Fatalf("only %d nonces used around the join", len(used))
	}
	waitUntil(t, 2*time.Second, "every nonce to reach the joined node", func() bool {
		for _, n := range used {
			if !late.ns.Seen(n, time.Now()) {
				return false
			}
		}
		return true
	})
	for _, n := range used {
		if late.ns.Use(n, time.Now()) {
			t.Fatalf("nonce %s, used on the first node around the join, was accepted on the joined node", n)
		}
	}
}

// TestClusterJoinLargeNonceState: a member's used nonces are its join state, 22 bytes
// each; past about 950,000 they were over memberlist's 20 MiB push/pull limit, and no
// node could join it any more (nor a restarted worker its node). Now the state goes in
// chunks: the join succeeds and the joined node refuses a replay of the first, a
// middle and the last nonce used.
func TestClusterJoinLargeNonceState(t *testing.T) {
	if raceEnabled {
		t.Skip("1.2 million nonces take minutes under the race detector: make test runs this without it (test-large)")
	}
	first := startNode(t, "n1", "")
	now := time.Now()
	const total = 1_200_000
	nonce := func(i int) []byte { return fmt.Appendf(nil, "bulk-%08d", i) }
	for i := range total {
		if !first.ns.Use(nonce(i), now) {
			t.Fatalf("nonce %d refused on first use", i)
		}
	}
	late := startNode(t, "n2", first.g.Addr()) // fails the test if the join fails
	for _, i := range []int{0, total / 2, total - 1} {
		if late.ns.Use(nonce(i), time.Now()) {
			t.Fatalf("nonce %d, used on n1 before n2 joined, was accepted on n2", i)
		}
	}
	if !late.ns.Use([]byte("bulk-fresh"), time.Now()) {
		t.Fatal("a fresh nonce refused on n2")
	}
}

// TestClusterSharedFileNoncesReachPeers: of two stores sharing a nonce file, only one
// gossips (a node's control process); nonces the other uses (a worker) reach the
// other nodes all the same, and nonces the other nodes use are refused by both.
func TestClusterSharedFileNoncesReachPeers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nonces")
	g, err := cluster.NewGossip(cluster.GossipConfig{NodeName: "host", BindAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	gossiper, err := ratelimit.NewNonceStore(ratelimit.NonceConfig{Transport: g, SharedFile: file})
	if err != nil {
		t.Fatal(err)
	}
	gossiper.Start()
	t.Cleanup(gossiper.Close)
	worker, err := ratelimit.NewNonceStore(ratelimit.NonceConfig{SharedFile: file})
	if err != nil {
		t.Fatal(err)
	}
	worker.Start()
	t.Cleanup(worker.Close)
	peer := startNode(t, "peer", g.Addr())
	waitUntil(t, 5*time.Second, "both members listed", func() bool { return len(g.MemberNames()) == 2 })

	for i := range 200 {
		nonce := fmt.Appendf(nil, "worker-%d", i)
		if !worker.Use(nonce, time.Now()) {
			t.Fatalf("nonce %d refused on first use", i)
		}
		if gossiper.Use(nonce, time.Now()) {
			t.Fatalf("nonce %d used by the worker was fresh for the store it shares a file with", i)
		}
		waitUntil(t, 2*time.Second, "the worker's nonce on the peer", func() bool { return peer.ns.Seen(nonce, time.Now()) })
		theirs := fmt.Appendf(nil, "peer-%d", i)
		if !peer.ns.Use(theirs, time.Now()) {
			t.Fatalf("peer nonce %d refused on first use", i)
		}
		waitUntil(t, 2*time.Second, "the peer's nonce in the shared file", func() bool { return worker.Seen(theirs, time.Now()) })
		if worker.Use(theirs, time.Now()) {
			t.Fatalf("peer nonce %d replayed on the worker", i)
		}
	}
}

// hidingTransport lists no other member until shown: gossip that has not told the
// limiter of a newcomer yet.
type hidingTransport struct {
	*cluster.Gossip
	shown atomic.Bool
}

func (h *hidingTransport) MemberNames() []string {
	if !h.shown.Load() {
		return []string{h.LocalName()}
	}
	return h.Gossip.MemberNames()
}

// TestClusterMembersChangedSplitsTheNextWindow: a limiter that has been alone sleeps
// between flushes; told that a member came (the node tells it on every gossip event),
// it splits the next window with the newcomer at once, instead of taking the whole
// quota as if still alone and leaving the newcomer to wait for a release.
func TestClusterMembersChangedSplitsTheNextWindow(t *testing.T) {
	g, err := cluster.NewGossip(cluster.GossipConfig{NodeName: "a", BindAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	tr := &hidingTransport{Gossip: g}
	a, err := ratelimit.New(ratelimit.Config{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetPolicies(testPolicies); err != nil {
		t.Fatal(err)
	}
	a.Start()
	t.Cleanup(a.Close)
	b := startNode(t, "b", g.Addr())
	waitUntil(t, 5*time.Second, "gossip to list b", func() bool { return len(g.MemberNames()) == 2 })
	time.Sleep(50 * time.Millisecond) // b's batches have reached a; a, alone by its view, still sleeps

	tr.shown.Store(true)
	a.MembersChanged()
	if ok, _ := a.Allow(a.Handle("big", ratelimit.DimAPI, "split-me", false), time.Now()); !ok {
		t.Fatal("a refused its first call")
	}
	time.Sleep(50 * time.Millisecond) // a's batch, with its ceiling, reaches b
	cb := b.l.Handle("big", ratelimit.DimAPI, "split-me", false)
	for i := range 2000 { // a holds half of the 10,000: b has at least 2,500 at once
		if ok, _ := b.l.Allow(cb, time.Now()); !ok {
			t.Fatalf("b refused call %d: a took more than its half of the window", i)
		}
	}
}

// unawareTransport is gossip that missed a member's join: until a join's state exchange
// reaches it, it neither lists the member nor sends to it. memberlist spreads a join
// by lossy gossip and heals a missed one only by such an exchange (a join, or the
// periodic one every 10 s); seen under load with workers joining as another node did.
type unawareTransport struct {
	*cluster.Gossip
	view   *cluster.View
	hidden string
	healed atomic.Bool
}

func (u *unawareTransport) MemberNames() []string {
	names := u.Gossip.MemberNames()
	if u.healed.Load() {
		return names
	}
	return slices.DeleteFunc(names, func(n string) bool { return n == u.hidden })
}

func (u *unawareTransport) SendToAll(ch byte, msg []byte) error {
	if u.healed.Load() {
		return u.Gossip.SendToAll(ch, msg)
	}
	return u.view.SendToAllBut(ch, msg, func(n string) bool { return n == u.hidden })
}

func (u *unawareTransport) Register(ch byte, onMsg func([]byte), local func(bool) []byte, merge func([]byte, bool)) error {
	return u.Gossip.Register(ch, onMsg, local, u.healOnJoin(merge))
}

// RegisterLarge is how the nonce store registers (its join state is built on request).
func (u *unawareTransport) RegisterLarge(ch byte, onMsg func([]byte), local func(bool) []byte, merge func([]byte, bool)) error {
	return u.Gossip.RegisterLarge(ch, onMsg, local, u.healOnJoin(merge))
}

func (u *unawareTransport) healOnJoin(merge func([]byte, bool)) func([]byte, bool) {
	return func(buf []byte, join bool) {
		if join {
			u.healed.Store(true)
		}
		merge(buf, join)
	}
}

// TestClusterSilentMemberIsIntroduced: c lists b, but b missed c's join, so b sends c
// nothing, and c's refills, which wait for every live member's acknowledgement, would
// wait until the periodic state exchange. c, hearing nothing from b for a second,
// exchanges state with it directly; b lists c, and c spends the rest of the quota.
func TestClusterSilentMemberIsIntroduced(t *testing.T) {
	a := startNode(t, "a", "")
	g, err := cluster.NewGossip(cluster.GossipConfig{NodeName: "b", BindAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	tr := &unawareTransport{Gossip: g, view: g.View(""), hidden: "c"}
	b, err := ratelimit.New(ratelimit.Config{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetPolicies(testPolicies); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Join([]string{a.g.Addr()}); err != nil {
		t.Fatal(err)
	}
	tr.healed.Store(false) // b's own join exchange is over: from now on it misses c's
	b.Start()
	t.Cleanup(b.Close)
	c := startNode(t, "c", a.g.Addr())
	waitUntil(t, 5*time.Second, "every gossip to list three members", func() bool {
		return a.g.NumMembers() == 3 && g.NumMembers() == 3 && c.g.NumMembers() == 3
	})
	if tr.healed.Load() {
		t.Fatal("b took part in a join exchange after its own: it cannot miss c's join")
	}

	const limit = 200 // app web
	h := c.l.Handle("basic", ratelimit.DimApp, "web", false)
	admitted, start := 0, time.Now()
	for i := 0; admitted < limit && i < 20000 && time.Since(start) < 5*time.Second; i++ {
		if ok, _ := c.l.Allow(h, time.Now()); ok {
			admitted++
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	t.Logf("c admitted %d of %d in %v", admitted, limit, time.Since(start).Round(time.Millisecond))
	if admitted != limit {
		t.Fatalf("c admitted %d of %d in 5 s: its refills waited for b, which does not list it", admitted, limit)
	}
	if !tr.healed.Load() {
		t.Fatal("c spent the quota, but not after a join exchange with b")
	}
}

// TestClusterSilentMemberLearnsNonces: b missed c's join, so it sends c none of the
// nonces used on it, and a replay of them on c would pass: the periodic state
// exchange heals the membership but carries no nonces. c, whose batches b never
// acknowledges, exchanges state with b directly, as a join does: c learns b's nonces,
// and b lists c from then on.
func TestClusterSilentMemberLearnsNonces(t *testing.T) {
	// Nonce stores only: a limiter would introduce itself to a silent member too (and
	// any join exchange with b heals it here, as one with a member that knows c does).
	newGossip := func(name string) *cluster.Gossip {
		g, err := cluster.NewGossip(cluster.GossipConfig{NodeName: name, BindAddr: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown() })
		return g
	}
	nonceStore := func(tr ratelimit.Transport, g *cluster.Gossip, join string, joined func()) *ratelimit.NonceStore {
		ns, err := ratelimit.NewNonceStore(ratelimit.NonceConfig{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		if join != "" {
			if _, err := g.Join([]string{join}); err != nil {
				t.Fatal(err)
			}
		}
		joined()
		ns.Start()
		t.Cleanup(ns.Close)
		return ns
	}
	ga := newGossip("a")
	nonceStore(ga, ga, "", func() {})
	gb := newGossip("b")
	tr := &unawareTransport{Gossip: gb, view: gb.View(""), hidden: "c"}
	b := nonceStore(tr, gb, ga.Addr(), func() { tr.healed.Store(false) })
	gc := newGossip("c")
	c := nonceStore(gc, gc, ga.Addr(), func() {})
	waitUntil(t, 5*time.Second, "every gossip to list three members", func() bool {
		return ga.NumMembers() == 3 && gb.NumMembers() == 3 && gc.NumMembers() == 3
	})

	usedOnB := []byte("5d1e2f3a-0000-4b7c-8d9e-b0b0b0b0b0b0")
	if !b.Use(usedOnB, time.Now()) {
		t.Fatal("b refused a fresh nonce")
	}
	time.Sleep(50 * time.Millisecond) // b's batches go out, to a only
	if c.Seen(usedOnB, time.Now()) {
		t.Fatal("c knows b's nonce: b did not miss c's join")
	}
	if !c.Use([]byte("5d1e2f3a-0000-4b7c-8d9e-c0c0c0c0c0c0"), time.Now()) { // c's own traffic
		t.Fatal("c refused a fresh nonce")
	}
	waitUntil(t, 5*time.Second, "b's nonce on c", func() bool { return c.Seen(usedOnB, time.Now()) })
	if c.Use(usedOnB, time.Now()) {
		t.Fatal("b's nonce replayed on c")
	}
	// b merges c's state after it sent its own: the exchange may not be over yet.
	waitUntil(t, time.Second, "b to merge c's state, as a join's exchange does", tr.healed.Load)
}

// TestClusterIdleLimitersOnlyHeartbeat: limiters with nothing to count send a batch
// every heartbeat (250 ms), not every flush (5 ms): acknowledgements answer entries
// only, so idle members do not keep each other awake. And the first calls after the
// quiet still see the cluster: the quota holds across them.
func TestClusterIdleLimitersOnlyHeartbeat(t *testing.T) {
	nodes := startNodes(t, 3)
	time.Sleep(300 * time.Millisecond) // the membership's own batches settle
	before := make([]int64, len(nodes))
	for i, n := range nodes {
		before[i] = n.tr.sends.Load()
	}
	const quiet = time.Second
	time.Sleep(quiet)
	for i, n := range nodes {
		sent := n.tr.sends.Load() - before[i]
		t.Logf("%s sent %d batches in %v of quiet", n.name, sent, quiet)
		if sent > 8 { // about 3 heartbeats; 200 when every flush sent one
			t.Errorf("%s sent %d batches in %v with nothing to count", n.name, sent, quiet)
		}
	}
	const limit = 200 // app web
	got := load(nodes, "basic", ratelimit.DimApp, "after-quiet", 3*limit, 200*time.Millisecond, time.Millisecond)
	if d := got - limit; d > tolerance(limit) || -d > tolerance(limit) {
		t.Fatalf("admitted %d after the quiet, want %d ± %d", got, limit, tolerance(limit))
	}
	converged(t, nodes, "basic", ratelimit.DimApp, "after-quiet", got)
	for _, n := range nodes {
		if ok, _ := n.l.Allow(n.l.Handle("basic", ratelimit.DimApp, "after-quiet", false), time.Now()); ok {
			t.Fatalf("%s admitted a call over the spent quota", n.name)
		}
	}
}
