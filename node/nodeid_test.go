package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A node id that could not name the node everywhere it must (raft, gossip, request
// ids, the cluster's packet budget) is refused at start, naming what is wrong, and the
// data dir is not even made.
func TestStartRefusesABadNodeID(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"node 1", `' ' at byte 4`},
		{"n1\nn2", `'\n' at byte 2`},
		{"nœud", `at byte 1`},
		{strings.Repeat("n", maxNodeID+1), "129 bytes, want 1 to 128"},
	} {
		cfg := testNodeConfig(t, tc.id)
		cfg.DataDir = filepath.Join(t.TempDir(), "data")
		n, err := Start(cfg)
		if err == nil {
			closeAtCleanup(t, n, "accepted")
			t.Fatalf("node id %q: started", tc.id)
		}
		if !strings.Contains(err.Error(), "node id") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("node id %q: error %q, want it to name the id and say %q", tc.id, err, tc.want)
		}
		if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
			t.Errorf("node id %q: the refused start made its data dir (%v)", tc.id, err)
		}
	}
}

// A generated id is made of the host name, cleaned of what an id may not hold.
func TestGeneratedNodeIDIsValid(t *testing.T) {
	for _, host := range []string{"gw-1.example.com", "host name", "", strings.Repeat("h", 200), "hôte"} {
		id := nodeIDSafe(host) + "-abcdef"
		if err := checkNodeID(id); err != nil {
			t.Errorf("host %q: generated id %q: %v", host, id, err)
		}
	}
	if got := nodeIDSafe("gw-1.example.com"); got != "gw-1.example.com" {
		t.Errorf("a valid host name changed: %q", got)
	}
	cfg := testNodeConfig(t, "")
	id, err := nodeID(cfg)
	if err != nil || checkNodeID(id) != nil {
		t.Fatalf("nodeID with none configured: %q, %v", id, err)
	}
}

// A data dir whose stored id was damaged (edited by hand) is refused with the file's
// name, not served under an id that breaks the cluster.
func TestStartRefusesADamagedStoredNodeID(t *testing.T) {
	cfg := testNodeConfig(t, "")
	path := filepath.Join(cfg.DataDir, "node-id")
	if err := os.WriteFile(path, []byte("bad id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Start(cfg)
	if err == nil {
		closeAtCleanup(t, n, "accepted")
		t.Fatal("started with a stored node id holding a space")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"bad id"`) {
		t.Errorf("error %q, want the file and the id", err)
	}
}
