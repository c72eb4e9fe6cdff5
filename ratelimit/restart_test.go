package ratelimit

import "testing"

// TestRestartedPeerStartsItsSequencesAfresh: a peer restarted under the same name (a
// node keeps its name and gossip address) comes with a new id and numbers its batches
// from 1 again. What the old process sent and acknowledged is no acknowledgement of
// the new one: kept, it would have this node acknowledge batches the new process
// never sent, and let that process refill before this node reserves for it.
func TestRestartedPeerStartsItsSequencesAfresh(t *testing.T) {
	newNamed := func(name string) *Limiter {
		l, err := New(Config{})
		if err != nil {
			t.Fatal(err)
		}
		l.name = name
		return l
	}
	a, b := newNamed("a"), newNamed("b")
	for range 3 { // a's batches reach b, which acknowledges the third
		b.onMsg(a.countsHeader(nil))
	}
	for range 50 {
		a.onMsg(b.countsHeader(nil))
	}
	p := a.peers["b"]
	if p.theirSeq != 50 || p.acked != 3 {
		t.Fatalf("before the restart: theirSeq %d, acked %d; want 50, 3", p.theirSeq, p.acked)
	}
	restarted := newNamed("b")
	a.onMsg(restarted.countsHeader(nil))
	if p := a.peers["b"]; p.id != restarted.nodeID || p.theirSeq != 1 || p.acked != 0 {
		t.Fatalf("after the restart: id %x (new %x), theirSeq %d, acked %d; want the new id, 1, 0", p.id, restarted.nodeID, p.theirSeq, p.acked)
	}
}
