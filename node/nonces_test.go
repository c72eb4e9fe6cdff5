package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRestartedNodeRefusesNoncesUsedBeforeTheStop: a node alone has no member to
// learn used nonces from when it starts again, and a call signed just before a stop
// (an upgrade, a flag change) could be replayed after it. A clean stop saves the live
// nonces in the data dir and the next start loads them, in process and with workers
// (whose table the node shares).
func TestRestartedNodeRefusesNoncesUsedBeforeTheStop(t *testing.T) {
	for _, workers := range []int{0, 2} {
		t.Run(map[int]string{0: "in process", 2: "workers"}[workers], func(t *testing.T) {
			cfg := testNodeConfig(t, "restarted")
			if workers > 0 {
				withWorkers(workers)(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n, err := Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			waitReadyNode(t, n)
			if _, err := NewClient("http://"+n.AdminAddr(), n.Token()).Apply(ctx, workersBundle(1_000, `{"ok":true}`), false); err != nil {
				t.Fatal(err)
			}
			used := signedRequest(t)
			if st, code, _ := send(t, n.DataAddr(), used); st != 200 {
				t.Fatalf("signed call: %d %s", st, code)
			}
			if err := n.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, noncesFile)); err != nil {
				t.Fatalf("no nonces saved at the stop: %v", err)
			}

			n, err = Start(cfg)
			if err != nil {
				t.Fatal(err)
			}
			closeAtCleanup(t, n, cfg.NodeID)
			waitReadyNode(t, n)
			if st, code, _ := send(t, n.DataAddr(), used); st != 400 || code != "A400NU" {
				t.Fatalf("the call signed before the stop, sent again after it: %d %s, want 400 A400NU", st, code)
			}
			if st, code, _ := signedCall(t, n.DataAddr()); st != 200 {
				t.Fatalf("a fresh signed call after the restart: %d %s", st, code)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, noncesFile)); !os.IsNotExist(err) {
				t.Errorf("the saved nonces are still on disk after they were loaded: %v", err)
			}
		})
	}
}
