package main

// Cluster end-to-end tests: several real `tollgate node` processes on loopback, killed
// with SIGKILL, stopped with SIGTERM, restarted on their data dirs.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/node"
)

const clusterToken = "e2e-cluster-token"

// clusterProc is one `tollgate node` process of a cluster test, restartable.
type clusterProc struct {
	t                         *testing.T
	id, dir                   string
	listen, admin, raft, goss string
	join                      []string
	started                   bool
	cmd                       *exec.Cmd
	done                      chan struct{}
	log                       *syncBuffer
}

func newClusterProc(t *testing.T, id string, join ...*clusterProc) *clusterProc {
	p := &clusterProc{t: t, id: id, dir: t.TempDir(), listen: freeAddr(t), admin: freeAddr(t), raft: freeAddr(t), goss: freeAddr(t)}
	for _, j := range join {
		p.join = append(p.join, j.goss)
	}
	t.Cleanup(func() { p.signal(syscall.SIGKILL) })
	return p
}

// start launches the process. A node that never started moves to other ports when the
// ones found free were taken by another test process before it bound them.
func (p *clusterProc) start() {
	p.t.Helper()
	for attempt := 1; ; attempt++ {
		p.launch()
		if p.started || attempt >= 5 || !p.bindFailed() {
			p.started = true
			return
		}
		p.listen, p.admin, p.raft, p.goss = freeAddr(p.t), freeAddr(p.t), freeAddr(p.t), freeAddr(p.t)
	}
}

// bindFailed waits (up to 5 s) until the node's admin API answers or the process
// exits, and reports whether it exited because an address was in use.
func (p *clusterProc) bindFailed() bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return strings.Contains(p.log.String(), "address already in use")
		default:
		}
		// The admin listener accepts connections as soon as it is bound, but answers
		// only once Start has bound everything else.
		if resp, err := (&http.Client{Timeout: 200 * time.Millisecond}).Get("http://" + p.admin + "/healthz"); err == nil {
			resp.Body.Close()
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (p *clusterProc) launch() {
	p.t.Helper()
	p.log = &syncBuffer{}
	args := []string{"node", "--data", p.dir, "--listen", p.listen, "--admin", p.admin,
		"--raft", p.raft, "--gossip", p.goss, "--node-id", p.id, "--log-level", "warn"}
	if len(p.join) > 0 {
		args = append(args, "--join", strings.Join(p.join, ","))
	}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), "TOLLGATE_ADMIN_TOKEN="+clusterToken)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
}

// signal sends sig and waits (up to 20 s) for the process to exit.
func (p *clusterProc) signal(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

func (p *clusterProc) waitReady(timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + p.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready within %v; its log:\n%s", p.id, timeout, p.log)
}

func (p *clusterProc) client() *node.Client { return node.NewClient(p.admin, clusterToken) }

func (p *clusterProc) isLeader() bool {
	resp, err := http.Get("http://" + p.admin + "/v1/raft")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st node.RaftStatus
	return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Leader
}

// cli runs the tollgate binary against this node's admin API.
func (p *clusterProc) cli(args ...string) (string, string, int) {
	p.t.Helper()
	return runCLI(p.t, []string{"TOLLGATE_ADMIN=http://" + p.admin, "TOLLGATE_ADMIN_TOKEN=" + clusterToken}, "", args...)
}

// callAPI calls g/aN through the data plane.
func (p *clusterProc) callAPI(i int) (int, string) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/a%d", p.listen, i), nil)
	req.Host = "g.localhost"
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (p *clusterProc) grants() map[string]bool {
	p.t.Helper()
	var gs []fsm.GrantSpec
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.client().Do(ctx, "GET", "/v1/grants", nil, &gs); err != nil {
		p.t.Fatalf("grants on %s: %v", p.id, err)
	}
	out := map[string]bool{}
	for _, g := range gs {
		out[g.API] = true
	}
	return out
}

// startProcCluster starts n nodes, the first bootstrapping, and waits for all.
func startProcCluster(t *testing.T, n int) []*clusterProc {
	t.Helper()
	first := newClusterProc(t, "p0")
	first.start()
	first.waitReady(20 * time.Second)
	ps := []*clusterProc{first}
	for i := 1; i < n; i++ {
		p := newClusterProc(t, fmt.Sprintf("p%d", i), first)
		p.start()
		ps = append(ps, p)
	}
	for _, p := range ps {
		p.waitReady(20 * time.Second)
	}
	return ps
}

func leaderOf(t *testing.T, ps []*clusterProc) *clusterProc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range ps {
			if p.cmd != nil && p.isLeader() {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within 10s")
	return nil
}

// applyRetry applies b through p, retrying for up to 10 s while the answer is a 503 (an
// election under a loaded machine).
func applyRetry(t *testing.T, p *clusterProc, b *fsm.Bundle) {
	t.Helper()
	var last error
	waitFor(t, 10*time.Second, "apply on "+p.id, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, last = p.client().Apply(ctx, b, false)
		var ae *node.APIError
		if last != nil && (!errors.As(last, &ae) || ae.Status != 503) {
			t.Fatalf("apply on %s: %v", p.id, last)
		}
		return last == nil
	})
}

// waitFor polls cond every 50 ms for up to timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A write on a follower is served by all; kill -9 of the leader during a stream of
// writes loses nothing acknowledged, on the survivors and on the killed node once it
// restarts; a fourth node joins and serves the current config; SIGTERM removes a node
// cleanly from the members.
func TestClusterE2E_WritesKillJoinLeave(t *testing.T) {
	ps := startProcCluster(t, 3)
	leader := leaderOf(t, ps)
	var followers []*clusterProc
	for _, p := range ps {
		if p != leader {
			followers = append(followers, p)
		}
	}

	// A write on a follower, served by all.
	applyRetry(t, followers[0], node.TestBundle(300))
	for _, p := range ps {
		waitFor(t, 5*time.Second, p.id+" serves g/a42", func() bool {
			code, body := p.callAPI(42)
			return code == 200 && body == "a42"
		})
	}

	// A stream of grants to the followers; the leader is killed in the middle.
	var mu sync.Mutex
	acked := map[int]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, f := range followers {
		wg.Go(func() {
			for i := w; i < 300; i += 2 {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := f.client().Do(ctx, "POST", "/v1/grants", &fsm.GrantSpec{App: "app", API: fmt.Sprintf("g/a%d", i), Stages: []fsm.Stage{fsm.StageRelease}}, nil)
				cancel()
				if err == nil {
					mu.Lock()
					acked[i] = true
					mu.Unlock()
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor(t, 20*time.Second, "20 writes acknowledged", func() bool { return count() >= 20 })
	leader.signal(syscall.SIGKILL)
	killedAt := count()
	waitFor(t, 20*time.Second, "writes going on after the leader's kill", func() bool { return count() >= killedAt+40 })
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged, %d before the kill", count(), killedAt)

	check := func(p *clusterProc) {
		t.Helper()
		var missing []int
		waitFor(t, 10*time.Second, "every acknowledged write on "+p.id, func() bool {
			have := p.grants()
			missing = missing[:0]
			for i := range acked {
				if !have[fmt.Sprintf("g/a%d", i)] {
					missing = append(missing, i)
				}
			}
			return len(missing) == 0
		})
	}
	for _, f := range followers {
		check(f)
	}
	leader.start()
	leader.waitReady(20 * time.Second)
	check(leader)

	// A fourth node joins and serves the current config.
	fourth := newClusterProc(t, "p3", followers[0])
	fourth.start()
	fourth.waitReady(20 * time.Second)
	check(fourth)
	if code, body := fourth.callAPI(299); code != 200 || body != "a299" {
		t.Fatalf("the fourth node serves g/a299 as %d %q", code, body)
	}

	// Members: four, each with an applied index.
	var ms []node.Member
	out, errs, code := fourth.cli("members", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &ms) != nil || len(ms) != 4 {
		t.Fatalf("members: exit %d\n%s%s", code, out, errs)
	}
	for _, m := range ms {
		if m.AppliedIndex == 0 || m.State != "alive" {
			t.Fatalf("member %+v: want alive with an applied index", m)
		}
	}

	// SIGTERM: the node leaves, and the members no longer show it.
	followers[1].signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the stopped node gone from members", func() bool {
		out, _, code := fourth.cli("members", "-o", "json")
		var ms []node.Member
		if code != 0 || json.Unmarshal([]byte(out), &ms) != nil {
			return false
		}
		for _, m := range ms {
			if m.ID == followers[1].id {
				return false
			}
		}
		return len(ms) == 3
	})
	out, _, _ = fourth.cli("members")
	t.Logf("members after SIGTERM:\n%s", out)
}

// Two of three killed: the survivor serves traffic, refuses writes with a clear error
// and serves reads marked stale.
func TestClusterE2E_QuorumLost(t *testing.T) {
	ps := startProcCluster(t, 3)
	applyRetry(t, ps[1], node.TestBundle(5))
	survivor := ps[2]
	waitFor(t, 5*time.Second, "the survivor serves g/a3", func() bool {
		code, _ := survivor.callAPI(3)
		return code == 200
	})
	ps[0].signal(syscall.SIGKILL)
	ps[1].signal(syscall.SIGKILL)

	// Writes: refused with an error that says the quorum is lost (once the survivor
	// knows it has no leader: within an election timeout or two).
	var errs string
	waitFor(t, 10*time.Second, "a write refused for lost quorum", func() bool {
		_, e, code := survivor.cli("deploy", "g/a1", "--stage", "TEST")
		errs = e
		return code != 0 && strings.Contains(e, "quorum")
	})
	t.Logf("write without quorum: %s", strings.TrimSpace(errs))

	// Traffic and reads go on, reads marked stale.
	for i := range 5 {
		if code, body := survivor.callAPI(i); code != 200 || body != fmt.Sprintf("a%d", i) {
			t.Fatalf("the survivor's data plane answers %d %q", code, body)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+survivor.admin+"/v1/apis", nil)
	req.Header.Set("Authorization", "Bearer "+clusterToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Tollgate-Stale") != "true" || !strings.Contains(string(body), "a4") {
		t.Fatalf("a read without quorum: %d stale=%q", resp.StatusCode, resp.Header.Get("X-Tollgate-Stale"))
	}
	out, _, code := survivor.cli("get", "apis")
	if code != 0 || !strings.Contains(out, "a4") {
		t.Fatalf("get apis without quorum: exit %d\n%s", code, out)
	}
}
