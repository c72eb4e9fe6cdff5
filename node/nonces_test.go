package node

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/signature"
)

// TestRestartedNodeRefusesNoncesUsedBeforeTheStop: a node alone has no member to
// learn used nonces from when it starts again, and a call signed just before a stop
// (an upgrade, a flag change) could be replayed after it. A clean stop saves the live
// nonces in the data dir and the next start loads them, in process and with workers
// (whose table the node shares).
func TestRestartedNodeRefusesNoncesUsedBeforeTheStop(t *testing.T) {
	inEachDataPlane(t, "restarted", func(t *testing.T, ctx context.Context, cfg Config) {
		n, used := startServingSignedCall(t, ctx, cfg)
		if err := n.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, noncesFile)); err != nil {
			t.Fatalf("no nonces saved at the stop: %v", err)
		}

		n = startReadyNode(t, cfg)
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

// startServingSignedCall starts a node on cfg with the workers' test API and serves
// one signed call, which it returns.
func startServingSignedCall(t *testing.T, ctx context.Context, cfg Config) (*Node, http.Header) {
	t.Helper()
	n := startReadyNode(t, cfg)
	if _, err := NewClient("http://"+n.AdminAddr(), n.Token()).Apply(ctx, workersBundle(1_000, `{"ok":true}`), false); err != nil {
		t.Fatal(err)
	}
	used := signedRequest(t)
	if st, code, _ := send(t, n.DataAddr(), used); st != 200 {
		t.Fatalf("signed call: %d %s", st, code)
	}
	return n, used
}

// startReadyNode starts a node on cfg, stopped when the test ends, and waits
// until it is ready.
func startReadyNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	closeAtCleanup(t, n, cfg.NodeID)
	waitReadyNode(t, n)
	return n
}

// signedRequestAt signs a call as a client whose clock reads at.
func signedRequestAt(t *testing.T, at time.Time) http.Header {
	t.Helper()
	req, err := http.NewRequest("GET", "http://shop.localhost/items", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := signature.NewSigner("AK-workers", "SK-workers-secret")
	s.Now = func() time.Time { return at }
	if _, err := s.SignHTTP(req); err != nil {
		t.Fatal(err)
	}
	return req.Header
}

// TestCrashedNodeRefusesCallsSignedBeforeItsRestart: a node that crashes saves no
// nonces, so a call it served just before could be sent again after the restart as if
// new. The restart finds the run's marker and no saved nonces, and refuses every call
// signed before it (plus crashClockLead) for the signature window, in process and
// with workers; calls signed after pass. A clean restart within the window keeps that
// horizon: the nonces the crash lost are still not in what it saves.
func TestCrashedNodeRefusesCallsSignedBeforeItsRestart(t *testing.T) {
	inEachDataPlane(t, "crashed", func(t *testing.T, ctx context.Context, cfg Config) {
		n, used := startServingSignedCall(t, ctx, cfg)
		unsigned := signedRequest(t) // signed before the crash, never sent
		n.Kill()

		restart := time.Now()
		n = startReadyNode(t, cfg)
		for name, h := range map[string]http.Header{"the call served before the crash": used, "a call signed before it": unsigned,
			"a call signed at the restart": signedRequestAt(t, restart)} {
			if st, code, _ := send(t, n.DataAddr(), h); st != 400 || code != "A400SR" {
				t.Errorf("%s, sent after the restart: %d %s, want 400 A400SR", name, st, code)
			}
		}
		after := restart.Add(crashClockLead + time.Second)
		served := signedRequestAt(t, after)
		if st, code, body := send(t, n.DataAddr(), served); st != 200 {
			t.Fatalf("a call signed after the restart's horizon: %d %s %s", st, code, body)
		}

		if err := n.Close(ctx); err != nil {
			t.Fatal(err)
		}
		n = startReadyNode(t, cfg)
		if st, code, _ := send(t, n.DataAddr(), used); st != 400 || code != "A400SR" {
			t.Errorf("the call served before the crash, after a clean restart that followed: %d %s, want 400 A400SR", st, code)
		}
		if st, code, _ := send(t, n.DataAddr(), served); st != 400 || code != "A400NU" {
			t.Errorf("the call served after the crash, after the clean restart: %d %s, want 400 A400NU", st, code)
		}
		if st, code, _ := send(t, n.DataAddr(), signedRequestAt(t, after)); st != 200 {
			t.Errorf("a fresh call signed after the horizon: %d %s", st, code)
		}
	})
}

// TestCrashedNodeWithANonceFileKeepsItsNonces: a nonce table in a file (--nonce-file,
// on tmpfs say) outlives a crash, so the restart knows the nonces and sets no horizon.
func TestCrashedNodeWithANonceFileKeepsItsNonces(t *testing.T) {
	cfg := testNodeConfig(t, "kept")
	cfg.NonceFile = filepath.Join(t.TempDir(), "nonce-table")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, used := startServingSignedCall(t, ctx, cfg)
	n.Kill()
	n = startReadyNode(t, cfg)
	if st, code, _ := send(t, n.DataAddr(), used); st != 400 || code != "A400NU" {
		t.Errorf("the call served before the crash, sent again: %d %s, want 400 A400NU", st, code)
	}
	if st, code, _ := signedCall(t, n.DataAddr()); st != 200 {
		t.Errorf("a call signed now: %d %s, want 200 (no horizon)", st, code)
	}
}

// inEachDataPlane runs test as a subtest for a node configured as id serving in its
// own process and with two workers (whose nonce table the node shares), with a
// context that bounds the subtest.
func inEachDataPlane(t *testing.T, id string, test func(t *testing.T, ctx context.Context, cfg Config)) {
	for _, workers := range []int{0, 2} {
		t.Run(map[int]string{0: "in process", 2: "workers"}[workers], func(t *testing.T) {
			cfg := testNodeConfig(t, id)
			if workers > 0 {
				withWorkers(workers)(&cfg)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			test(t, ctx, cfg)
		})
	}
}
