package node

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
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

// startNode runs one node on loopback ports with quiet logs, waits until it is ready,
// and closes it at cleanup. edit, if not nil, adjusts the configuration first.
func startNode(t *testing.T, id string, edit func(*Config)) *Node {
	t.Helper()
	cfg := testNodeConfig(t, id)
	if edit != nil {
		edit(&cfg)
	}
	n, err := Start(cfg)
	// A port found free may be taken by another test process before the node binds it.
	for attempt := 1; err != nil && attempt < 5 && strings.Contains(err.Error(), "address already in use"); attempt++ {
		cfg.Raft, cfg.Gossip = freeTestAddr(t), freeTestAddr(t)
		n, err = Start(cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	closeAtCleanup(t, n, id)
	waitReadyNode(t, n)
	return n
}

// testNodeConfig is a node's configuration on loopback ports, in a data dir of the
// test's, with quiet logs.
func testNodeConfig(t *testing.T, id string) Config {
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Raft, cfg.Gossip = freeTestAddr(t), freeTestAddr(t)
	cfg.NodeID = id
	cfg.RaftLog = io.Discard
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.SubdomainDailyLimit = 0
	return cfg
}

// closeAtCleanup closes n when the test ends.
func closeAtCleanup(t *testing.T, n *Node, id string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("close %s: %v", id, err)
		}
	})
}
