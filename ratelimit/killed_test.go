package ratelimit_test

import (
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/ratelimit"
)

// TestClusterQuotasNodeKilledMidwayEveryDimension is TestClusterQuotaNodeKilledMidway
// for every kind of quota of the issue at once: an API limit, an app limit, a user
// limit, a special app and a special user, with calls round-robin and concurrent over
// three nodes, one of which is killed when half of each quota is spent.
func TestClusterQuotasNodeKilledMidwayEveryDimension(t *testing.T) {
	nodes := startNodes(t, 3)
	cases := []struct {
		name    string
		dim     ratelimit.Dimension
		subject string
		limit   int64
		pace    time.Duration
	}{
		{"api", ratelimit.DimAPI, "weather/city", 1000, 300 * time.Microsecond},
		{"app", ratelimit.DimApp, "web", 200, time.Millisecond},
		{"user", ratelimit.DimUser, "alice", 600, 500 * time.Microsecond},
		{"special app", ratelimit.DimApp, "vip", 500, 500 * time.Microsecond},
		{"special user", ratelimit.DimUser, "bob", 100, time.Millisecond},
	}
	got := make([]int64, len(cases))
	var wg sync.WaitGroup
	// First half on all three nodes, every key at once.
	for i, c := range cases {
		wg.Go(func() { got[i] = load(nodes, "basic", c.dim, c.subject, int(c.limit/2), 0, c.pace) })
	}
	wg.Wait()
	nodes[2].kill()
	// The rest on the survivors, long enough for the dead node to be noticed (~1 s):
	// until then its unspent part stays reserved. (load stops at 20× calls whatever
	// minDur says, so calls is large enough for the smallest quota to last 1.5 s.)
	for i, c := range cases {
		wg.Go(func() {
			got[i] += load(nodes[:2], "basic", c.dim, c.subject, int(max(2*c.limit, 2000)), 1500*time.Millisecond, c.pace)
		})
	}
	wg.Wait()
	for i, c := range cases {
		d := got[i] - c.limit
		t.Logf("%-12s limit %4d admitted %4d (%+d) with a node killed midway", c.name, c.limit, got[i], d)
		if d > tolerance(c.limit) || -d > tolerance(c.limit) {
			t.Errorf("%s: admitted %d, want %d ± %d", c.name, got[i], c.limit, tolerance(c.limit))
		}
		// The dead node's counts still count on the survivors.
		converged(t, nodes[:2], "basic", c.dim, c.subject, got[i])
	}
}
