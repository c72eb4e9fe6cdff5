package cluster

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestGossip starts a member on a free loopback port and stops it at the end.
func newTestGossip(t *testing.T, name string, key []byte) *Gossip {
	t.Helper()
	g, err := NewGossip(GossipConfig{
		NodeName: name, BindAddr: "127.0.0.1", SecretKey: key,
		Meta: NodeMeta{ID: name, RaftAddr: "127.0.0.1:7" + name[len(name)-1:], AdminAddr: "127.0.0.1:9" + name[len(name)-1:]},
	})
	if err != nil {
		t.Fatalf("NewGossip(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

// waitFor polls cond every 10ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", d, what)
	return 0
}

func startCluster(t *testing.T, n int, key []byte) []*Gossip {
	t.Helper()
	gs := make([]*Gossip, n)
	for i := range gs {
		gs[i] = newTestGossip(t, fmt.Sprintf("node%d", i+1), key)
	}
	for _, g := range gs[1:] {
		if _, err := g.Join([]string{gs[0].Addr()}); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	waitFor(t, 3*time.Second, "all members to see each other", func() bool {
		for _, g := range gs {
			if g.NumMembers() != n {
				return false
			}
		}
		return true
	})
	return gs
}

func TestGossipJoinMembersAndMeta(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	gs := startCluster(t, 3, key)
	ms := gs[2].Members()
	if len(ms) != 3 {
		t.Fatalf("members = %d, want 3", len(ms))
	}
	for i, m := range ms {
		want := fmt.Sprintf("node%d", i+1)
		if m.Name != want || m.State != MemberAlive || m.Meta.ID != want || m.Meta.RaftAddr == "" || m.Meta.AdminAddr == "" {
			t.Errorf("member %d = %+v", i, m)
		}
	}
	if got := gs[0].MemberNames(); fmt.Sprint(got) != "[node1 node2 node3]" {
		t.Errorf("MemberNames = %v", got)
	}
	if err := gs[1].SetMeta(NodeMeta{ID: "node2", RaftAddr: "127.0.0.1:7999"}, time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "meta update to reach node1", func() bool {
		for _, m := range gs[0].Members() {
			if m.Name == "node2" && m.Meta.RaftAddr == "127.0.0.1:7999" {
				return true
			}
		}
		return false
	})
}

func TestGossipSendToAllAndChannels(t *testing.T) {
	gs := startCluster(t, 3, nil)
	type got struct {
		mu   sync.Mutex
		msgs map[string][]string
	}
	rec := &got{msgs: map[string][]string{}}
	for _, g := range gs {
		name := g.LocalName()
		for _, ch := range []byte{1, 2} {
			ch := ch
			if err := g.Register(ch, func(m []byte) {
				rec.mu.Lock()
				rec.msgs[name] = append(rec.msgs[name], fmt.Sprintf("%d:%s", ch, m))
				rec.mu.Unlock()
			}, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := gs[0].Register(1, func([]byte) {}, nil, nil); err == nil {
		t.Fatal("registering a taken channel succeeded")
	}
	big := bytes.Repeat([]byte("x"), 5000) // goes over TCP
	if err := gs[0].SendToAll(1, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := gs[0].SendToAll(2, big); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "both messages at node2 and node3", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.msgs["node2"]) == 2 && len(rec.msgs["node3"]) == 2
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs["node1"]) != 0 {
		t.Errorf("sender got its own message: %v", rec.msgs["node1"])
	}
	for _, n := range []string{"node2", "node3"} {
		var sawHello, sawBig bool
		for _, m := range rec.msgs[n] {
			sawHello = sawHello || m == "1:hello"
			sawBig = sawBig || m == "2:"+string(big)
		}
		if !sawHello || !sawBig {
			t.Errorf("%s got %d messages, hello=%v big=%v", n, len(rec.msgs[n]), sawHello, sawBig)
		}
	}
}

func TestGossipPushPullStateOnJoin(t *testing.T) {
	a := newTestGossip(t, "node1", nil)
	b := newTestGossip(t, "node2", nil)
	var mu sync.Mutex
	var merged []string
	if err := a.Register(9, nil, func(join bool) []byte { return []byte("state-of-a") }, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(9, nil, func(bool) []byte { return []byte("state-of-b") }, func(buf []byte, join bool) {
		mu.Lock()
		merged = append(merged, fmt.Sprintf("%s/%v", buf, join))
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	// Join returns only after the remote state was merged.
	mu.Lock()
	defer mu.Unlock()
	if len(merged) == 0 || merged[0] != "state-of-a/true" {
		t.Fatalf("merged on join = %v", merged)
	}
}

func TestGossipFailureDetectionAndEvents(t *testing.T) {
	gs := startCluster(t, 3, nil)
	events := make(chan MemberEvent, 16)
	gs[0].OnEvent(func(e MemberEvent) { events <- e })

	killed := time.Now()
	if err := gs[2].Shutdown(); err != nil { // no Leave: a crash
		t.Fatal(err)
	}
	var ev MemberEvent
	select {
	case ev = <-events:
	case <-time.After(3 * time.Second):
		t.Fatal("no leave event within 3s of killing node3")
	}
	took := time.Since(killed)
	if ev.Kind != EventLeave || ev.Member.Name != "node3" || ev.Member.State != MemberDead {
		t.Fatalf("event = %+v", ev)
	}
	t.Logf("killed member marked dead after %v", took)
	if took > 2*time.Second {
		t.Errorf("failure detection took %v, want ≤ 2s (aim 1s)", took)
	}
	var st MemberState = -1
	for _, m := range gs[0].Members() {
		if m.Name == "node3" {
			st = m.State
		}
	}
	if st != MemberDead {
		t.Errorf("node3 state in Members = %v, want dead", st)
	}

	// A leaving notice handled after the leave itself (they travel apart, TCP and
	// UDP): the member reported dead is corrected to left.
	notice := append([]byte{channelInternal, internalLeaving}, "node3"...)
	if err := gs[1].ml.SendReliable(gs[0].ml.LocalNode(), notice); err != nil {
		t.Fatal(err)
	}
	wantLeave(t, events, "node3", MemberLeft)
	for _, m := range gs[0].Members() {
		if m.Name == "node3" && m.State != MemberLeft {
			t.Errorf("node3 state in Members after the late notice = %v, want left", m.State)
		}
	}

	// A clean leave is reported as left.
	if err := gs[1].Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	wantLeave(t, events, "node2", MemberLeft)
}

// wantLeave waits up to 3 s for the next event and fails unless it reports name
// leaving in state.
func wantLeave(t *testing.T, events <-chan MemberEvent, name string, state MemberState) {
	t.Helper()
	select {
	case ev := <-events:
		if ev.Kind != EventLeave || ev.Member.Name != name || ev.Member.State != state {
			t.Fatalf("event = %+v, want %s leaving as %v", ev, name, state)
		}
	case <-time.After(3 * time.Second):
		t.Fatalf("no leave event for %s within 3s", name)
	}
}

func TestGossipEncryptionMismatchCannotJoin(t *testing.T) {
	a := newTestGossip(t, "node1", bytes.Repeat([]byte{1}, 32))
	b := newTestGossip(t, "node2", bytes.Repeat([]byte{2}, 32))
	c := newTestGossip(t, "node3", nil)
	if n, err := b.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Errorf("join with another key: n=%d err=%v, want failure", n, err)
	}
	if n, err := c.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Errorf("join with no key: n=%d err=%v, want failure", n, err)
	}
	time.Sleep(300 * time.Millisecond)
	if a.NumMembers() != 1 || b.NumMembers() != 1 || c.NumMembers() != 1 {
		t.Errorf("members: a=%d b=%d c=%d, want 1 each", a.NumMembers(), b.NumMembers(), c.NumMembers())
	}
	if _, err := NewGossip(GossipConfig{NodeName: "x", BindAddr: "127.0.0.1", SecretKey: []byte("short")}); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

func TestGossipDropFilterPartitions(t *testing.T) {
	gs := startCluster(t, 3, nil)
	cut := gs[2].Addr()
	gs[0].SetDropFilter(func(a string) bool { return a == cut })
	gs[1].SetDropFilter(func(a string) bool { return a == cut })
	keep := map[string]bool{gs[0].Addr(): true, gs[1].Addr(): true}
	gs[2].SetDropFilter(func(a string) bool { return keep[a] })
	waitFor(t, 5*time.Second, "each side to see the other as dead", func() bool {
		return gs[0].NumMembers() == 2 && gs[1].NumMembers() == 2 && gs[2].NumMembers() == 1
	})
	for _, g := range gs {
		g.SetDropFilter(nil)
	}
	if _, err := gs[2].Join([]string{gs[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "heal", func() bool {
		return gs[0].NumMembers() == 3 && gs[1].NumMembers() == 3 && gs[2].NumMembers() == 3
	})
}

// TestGossipViewByRole: a view lists and reaches the members of its roles only, so a
// node's control, which counts no quotas, neither acknowledges nor receives counts,
// and workers get no nonce batches (they share their node's table).
// newRoleGossip starts a member of role on a free loopback port and stops it at the end.
func newRoleGossip(t *testing.T, name, role string) *Gossip {
	t.Helper()
	g, err := NewGossip(GossipConfig{NodeName: name, BindAddr: "127.0.0.1", Meta: NodeMeta{ID: name, Role: role}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func TestGossipViewByRole(t *testing.T) {
	node := newRoleGossip(t, "a", RoleNode)
	control := newRoleGossip(t, "b", RoleControl)
	worker := newRoleGossip(t, "b-w0", RoleWorker)
	all := []*Gossip{node, control, worker}
	for _, g := range all[1:] {
		if _, err := g.Join([]string{node.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 3*time.Second, "all members listed", func() bool {
		for _, g := range all {
			if len(g.View(RoleNode, RoleControl, RoleWorker).MemberNames()) != 3 {
				return false
			}
		}
		return true
	})
	if got := node.View(RoleNode, RoleWorker).MemberNames(); fmt.Sprint(got) != "[a b-w0]" {
		t.Errorf("counting members seen from the node: %v", got)
	}
	if got := worker.View(RoleNode, RoleControl).MemberNames(); fmt.Sprint(got) != "[a b b-w0]" {
		t.Errorf("nonce members seen from a worker (itself included): %v", got)
	}
	var mu sync.Mutex
	got := map[string]int{}
	for _, g := range all {
		if err := g.Register(9, func(msg []byte) {
			mu.Lock()
			got[g.LocalName()]++
			mu.Unlock()
		}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 { // UDP: enough sends that a lost packet does not fail the test
		if err := node.View(RoleNode, RoleWorker).SendToAll(9, []byte("counts")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, 2*time.Second, "the worker to receive", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got["b-w0"] > 0
	})
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if got["b"] != 0 || got["a"] != 0 {
		t.Errorf("a send to the counting members reached the control or the sender: %v", got)
	}
}

// TestGossipIntroduce: Introduce runs a join's state exchange with a live member (its
// state merged with join set), through a view only with a member of the view's roles,
// and with nobody once it left.
func TestGossipIntroduce(t *testing.T) {
	a, w := newRoleGossip(t, "a", RoleNode), newRoleGossip(t, "a/w0.1", RoleWorker)
	var joins atomic.Int64
	if err := w.Register(9, nil, func(bool) []byte { return []byte("w") }, func(_ []byte, join bool) {
		if join {
			joins.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(9, nil, func(bool) []byte { return []byte("a") }, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "a to list the worker", func() bool { return len(a.MemberNames()) == 2 })
	base := joins.Load() // the worker's own join

	a.View(RoleNode).Introduce("a/w0.1") // not a member of the view: nothing
	a.Introduce("nobody")
	time.Sleep(200 * time.Millisecond)
	if n := joins.Load(); n != base {
		t.Fatalf("%d exchanges with a member outside the view or unknown", n-base)
	}
	a.View(RoleWorker).Introduce("a/w0.1") // a name with a "/": by address
	waitFor(t, 3*time.Second, "the introduction's exchange", func() bool { return joins.Load() == base+1 })
	if err := a.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	a.Introduce("a/w0.1") // it would tell the worker that a is still about
	time.Sleep(100 * time.Millisecond)
	if n := joins.Load(); n != base+1 {
		t.Fatalf("an exchange after Leave (%d)", n-base)
	}
}
