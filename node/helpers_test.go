package node

import (
	"net"
	"testing"
	"time"
)

// freeTestAddr returns a loopback address with a port nobody listens on right now, for
// listeners (raft, gossip) that need their address before they bind.
func freeTestAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReadyNode waits (up to 15 s) until n reports ready.
func waitReadyNode(t *testing.T, n *Node) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !n.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("node not ready within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
