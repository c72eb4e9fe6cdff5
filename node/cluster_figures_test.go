package node

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

// The cluster's figures (issue 4), measured on real in-process nodes over loopback.
// They are measurements, not assertions, and take about a minute, so they run only
// when asked:
//
//	TOLLGATE_CLUSTER_FIGURES=1 go test -run TestClusterFigures -v -count=1 ./node/
func TestClusterFigures(t *testing.T) {
	if os.Getenv("TOLLGATE_CLUSTER_FIGURES") == "" {
		t.Skip("set TOLLGATE_CLUSTER_FIGURES=1 to measure the cluster's figures")
	}
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", size), func(t *testing.T) {
			c := MakeCluster(t, size, ClusterOptions{})
			leader := c.WaitLeader(5 * time.Second)
			applyBundle(t, leader, TestBundle(1000))
			c.WaitApplied(leader.AppliedIndex(), 10*time.Second)
			figureServedEverywhere(t, c, leader, 300)
			figureThroughput(t, leader, 3*time.Second)
			if size == 3 {
				figureJoin(t, c)
			}
			figureFailover(t, c, 5)
		})
	}
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func grantCmd(i int) *fsm.Grant {
	return &fsm.Grant{Grant: fsm.GrantSpec{App: "app", API: fmt.Sprintf("g/a%d", i%1000), Stages: []fsm.Stage{fsm.StageRelease}}}
}

// figureServedEverywhere: from the leader acknowledging a write (committed, and served
// by the leader's data plane) to every node's data plane serving it.
func figureServedEverywhere(t *testing.T, c *TestCluster, leader *TestNode, writes int) {
	ln := leader.Node()
	var lat []time.Duration
	for i := range writes {
		if _, err := ln.propose(fsm.CmdGrant, grantCmd(i)); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		idx := ln.fsm.State().Index
		var wg sync.WaitGroup
		var slowest atomic.Int64
		for _, tn := range c.Up() {
			wg.Go(func() {
				if !tn.Node().waitServed(idx, 5*time.Second) {
					t.Errorf("%s did not serve index %d within 5s", tn.ID(), idx)
				}
				d := int64(time.Since(acked))
				for {
					cur := slowest.Load()
					if d <= cur || slowest.CompareAndSwap(cur, d) {
						break
					}
				}
			})
		}
		wg.Wait()
		lat = append(lat, time.Duration(slowest.Load()))
		time.Sleep(2 * time.Millisecond) // isolated writes
	}
	t.Logf("FIGURE %d nodes: acknowledged write → served on every node: p50 %v, p99 %v, max %v (%d writes)",
		len(c.Up()), pct(lat, 0.50), pct(lat, 0.99), pct(lat, 1), writes)
}

// figureThroughput: committed writes per second with 32 concurrent writers on the leader.
func figureThroughput(t *testing.T, leader *TestNode, d time.Duration) {
	ln := leader.Node()
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline); i += 32 {
				data, _ := fsm.Encode(fsm.CmdGrant, grantCmd(i))
				if _, err := ln.raft.Propose(data, 5*time.Second); err != nil {
					t.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("FIGURE %d nodes: committed writes per second (32 writers on the leader): %.0f", len(ln.gossip.MemberNames()), float64(n.Load())/d.Seconds())
}

// figureJoin: from starting a node that joins to it being ready, with 1,000 APIs in the
// config.
func figureJoin(t *testing.T, c *TestCluster) {
	start := time.Now()
	tn := c.AddNode()
	c.WaitReady(30*time.Second, tn)
	t.Logf("FIGURE join → ready with %d APIs in the config: %v", len(tn.Node().State().APIs), time.Since(start))
	c.Close(tn, 10*time.Second)
	c.WaitRaftServers(len(c.Up()), 10*time.Second)
}

// figureFailover: from killing the leader to a write through a survivor (forwarded to
// the new leader) being acknowledged.
func figureFailover(t *testing.T, c *TestCluster, rounds int) {
	var lat []time.Duration
	for r := range rounds {
		leader := c.WaitLeader(5 * time.Second)
		survivor := c.Followers()[0]
		c.Kill(leader)
		killed := time.Now()
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := survivor.Grant(ctx, r)
			cancel()
			if err == nil {
				break
			}
			if time.Since(killed) > 10*time.Second {
				t.Fatalf("no write accepted 10s after the leader's kill: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		lat = append(lat, time.Since(killed))
		c.Restart(leader)
		c.WaitReady(15*time.Second, leader)
	}
	t.Logf("FIGURE %d nodes: leader kill → writes accepted again: median %v, max %v (%d kills)",
		len(c.Up()), pct(lat, 0.5), pct(lat, 1), rounds)
}
