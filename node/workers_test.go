package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
	"golang.org/x/sys/unix"
)

// testWorkerEnv makes the test binary a data plane worker (RunWorker) instead of
// running tests: nodes with Workers start it so, over real processes.
const testWorkerEnv = "TOLLGATE_NODE_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(testWorkerEnv) == "1" {
		if err := RunWorker(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// withWorkers makes a node run its data plane in n worker processes of this binary.
func withWorkers(n int) func(*Config) {
	return func(cfg *Config) {
		cfg.Workers = n
		cfg.WorkerCommand = []string{"/usr/bin/env", testWorkerEnv + "=1", os.Args[0]}
	}
}

// workersBundle: a signed API under a daily quota of limit calls, answering body.
func workersBundle(limit int64, body string) *fsm.Bundle {
	return &fsm.Bundle{
		Groups: []fsm.GroupSpec{{Name: "shop", APIs: []fsm.APISpec{{
			Name: "items",
			APIDef: fsm.APIDef{Method: "GET", Path: "/items", Auth: fsm.AuthApp, Traffic: "daily",
				Backend: fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: body}},
			Deploy: []fsm.Stage{fsm.StageRelease},
		}}}},
		Traffic: []fsm.TrafficSpec{{Name: "daily", Window: "day", API: limit}},
		Apps:    []fsm.AppSpec{{Name: "web", Owner: "ann", Key: "AK-workers", Secret: "SK-workers-secret"}},
		Grants:  []fsm.GrantSpec{{App: "web", API: "shop/items", Stages: []fsm.Stage{fsm.StageRelease}}},
	}
}

// fresh is an HTTP client that opens a new connection for every call, so the kernel
// hands each to whichever worker accepts it.
var fresh = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// signedRequest is a signed GET /items, with a fresh nonce: sending its headers again
// is a replay.
func signedRequest(t *testing.T) http.Header {
	t.Helper()
	req, err := http.NewRequest("GET", "http://shop.localhost/items", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signature.NewSigner("AK-workers", "SK-workers-secret").SignHTTP(req); err != nil {
		t.Fatal(err)
	}
	return req.Header
}

// send sends a request with headers h to addr, on a connection of its own.
func send(t *testing.T, addr string, h http.Header) (status int, code, body string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/items", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "shop.localhost"
	req.Header = h.Clone()
	resp, err := fresh.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Ca-Error-Code"), string(b)
}

// signedCall sends a freshly signed call to addr.
func signedCall(t *testing.T, addr string) (status int, code, body string) {
	t.Helper()
	return send(t, addr, signedRequest(t))
}

// metricsText fetches the node's /metrics.
func metricsText(t *testing.T, n *Node) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+n.AdminAddr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+n.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue reads an unlabelled series from the node's /metrics.
func metricValue(t *testing.T, n *Node, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(metricsText(t, n), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

// workerRequests reads, from the node's /metrics, the calls each worker answered.
func workerRequests(t *testing.T, n *Node) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	re := regexp.MustCompile(`(?m)^tollgate_proxy_requests_total\{[^}]*worker="(\d+)"[^}]*\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(metricsText(t, n), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] += v
	}
	return out
}

// workersAndOneNode starts a cluster of a node with two workers and a node serving in
// process.
func workersAndOneNode(t *testing.T) (c *TestCluster, workers, other *Node) {
	c = MakeCluster(t, 2, ClusterOptions{Configure: func(i int, cfg *Config) {
		if i == 0 {
			withWorkers(2)(cfg)
		}
	}})
	return c, c.Nodes()[0].Node(), c.Nodes()[1].Node()
}

// TestWorkersActAsOneNode: a node whose data plane runs in two worker processes, in a
// cluster with a node serving in process. Both workers take calls; the API's quota
// holds across the workers and the other node exactly; a nonce used on one worker is
// refused on the other and on the other node; a change is served by every worker
// when its write returns.
func TestWorkersActAsOneNode(t *testing.T) {
	c, workers, other := workersAndOneNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const limit = 60
	if _, err := c.Nodes()[0].Client().Apply(ctx, workersBundle(limit, `{"v":1}`), false); err != nil {
		t.Fatal(err)
	}

	// A change is live on every worker when the write returns.
	if _, err := c.Nodes()[0].Client().Apply(ctx, workersBundle(limit, `{"v":2}`), false); err != nil {
		t.Fatal(err)
	}
	// (A member waiting for its next quota budget refuses with 429 meanwhile; those are
	// tried again, with a new signature, and counted in the quota phase below.)
	admitted := 0
	for i, tries := 0, 0; i < 12; tries++ {
		st, code, body := signedCall(t, workers.DataAddr())
		switch {
		case st == 429 && code == "T429AR" && tries < 100:
			time.Sleep(10 * time.Millisecond)
			continue
		case st != 200 || body != `{"v":2}`:
			t.Fatalf("call %d right after the write: %d %s %s, want 200 {\"v\":2}", i, st, code, body)
		}
		admitted++
		i++
	}
	per := workerRequests(t, workers)
	if per["0"] == 0 || per["1"] == 0 {
		t.Fatalf("calls per worker %v: both workers should take connections", per)
	}

	// Nonces: used on one worker, refused on the other (shared memory, at once) and on
	// the other node (gossip, within a second). The other node is asked only once the
	// second has passed: gossip's window is milliseconds on a quiet machine but more
	// under the race detector and a busy CPU, and a nonce it was asked too early is
	// used there, not refused.
	var used []http.Header
	for i := range 10 {
		// A member that spent its part of the quota refuses (429) until its next
		// budget; a refused call has used its nonce, so each try signs anew.
		var nonce http.Header
		for try := 0; nonce == nil; try++ {
			h := signedRequest(t)
			st, code, _ := send(t, workers.DataAddr(), h)
			switch {
			case st == 200:
				nonce = h
			case st != 429 || try == 100:
				t.Fatalf("first use of nonce %d: %d %s (try %d)", i, st, code, try)
			default:
				time.Sleep(10 * time.Millisecond)
			}
		}
		admitted++
		for range 3 { // fresh connections: the other worker too, most likely
			if st, code, _ := send(t, workers.DataAddr(), nonce); st != 400 || code != "A400NU" {
				t.Fatalf("nonce %d replayed on the node with workers: %d %s", i, st, code)
			}
		}
		used = append(used, nonce)
	}
	time.Sleep(time.Second)
	for i, nonce := range used {
		if st, code, _ := send(t, other.DataAddr(), nonce); st != 400 || code != "A400NU" {
			t.Fatalf("nonce %d, used on a worker a second ago, on the other node: %d %s", i, st, code)
		}
	}

	// The quota, across both workers and the other node: exactly limit calls in all.
	deadline := time.Now().Add(15 * time.Second)
	refusedInARow := 0
	for i := 0; refusedInARow < 20; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %d of %d admitted, %d refused in a row", admitted, limit, refusedInARow)
		}
		addr := workers.DataAddr()
		if i%3 == 2 {
			addr = other.DataAddr()
		}
		st, code, _ := signedCall(t, addr)
		switch {
		case st == 200:
			admitted++
			refusedInARow = 0
		case st == 429:
			if admitted >= limit {
				refusedInARow++
			} else {
				time.Sleep(10 * time.Millisecond) // a member waits for its next budget
			}
		default:
			t.Fatalf("call %d: %d %s", i, st, code)
		}
		if admitted > limit {
			t.Fatalf("%d calls admitted under a quota of %d", admitted, limit)
		}
	}
	if admitted != limit {
		t.Fatalf("%d admitted, want %d", admitted, limit)
	}
	t.Logf("calls per worker %v; %d admitted of a quota of %d", workerRequests(t, workers), admitted, limit)
}

// TestWorkerCrashAndDrain: a worker killed is started again and serves at once,
// quota calls included; Close drains the workers and none is left running.
func TestWorkerCrashAndDrain(t *testing.T) {
	n := startNode(t, "workers-crash", withWorkers(2))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := NewClient("http://"+n.AdminAddr(), n.Token())
	if _, err := client.Apply(ctx, workersBundle(1_000_000, `{"ok":true}`), false); err != nil {
		t.Fatal(err)
	}
	// Spend from both workers' budgets, so the restarted worker needs the dead one's
	// reservation released (the node tells its workers at once; gossip takes ~1 s).
	for i := range 20 {
		if st, code, _ := signedCall(t, n.DataAddr()); st != 200 {
			t.Fatalf("call %d: %d %s", i, st, code)
		}
	}
	before := n.pool.pids()
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntilTrue(t, 10*time.Second, "worker 0 to be back and serving", func() bool {
		now := n.pool.pids()
		_, served := n.pool.servedIndex()
		return now[0] != 0 && now[0] != before[0] && now[1] == before[1] && served
	})
	// The new worker learned of the window from its sibling's counts before its own
	// first call, so it takes its first budget once the sibling has acknowledged it (a
	// few flushes of 5 ms): calls until then are refused with a Retry-After.
	restarted := time.Now()
	refused := 0
	for ok := 0; ok < 20; {
		st, code, _ := signedCall(t, n.DataAddr())
		switch {
		case st == 200:
			ok++
		case st == 429 && time.Since(restarted) < 300*time.Millisecond:
			refused++
			time.Sleep(5 * time.Millisecond)
		default:
			t.Fatalf("%v after the restart, %d calls served: %d %s", time.Since(restarted), ok, st, code)
		}
	}
	t.Logf("after the restart, %d calls refused while the new worker took its first budget", refused)
	if exits, serving := metricValue(t, n, "tollgate_worker_exits_total"), metricValue(t, n, "tollgate_workers_serving"); exits != 1 || serving != 2 {
		t.Errorf("metrics after one crash: tollgate_worker_exits_total %v, tollgate_workers_serving %v; want 1 and 2", exits, serving)
	}
	pids := n.pool.pids()
	closeCtx, cancelClose := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelClose()
	if err := n.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("worker %d still running after Close (kill -0: %v)", pid, err)
		}
	}
	if _, err := fresh.Get("http://" + n.DataAddr() + "/"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("data plane after Close: %v, want connection refused", err)
	}
}

// TestWorkerRestartsOnANodeWithLargeNonceState: a worker joins its node's gossip
// when it starts, and the join brings the node's state, its used nonces included.
// Past ~950,000 nonces that was over memberlist's 20 MiB limit: the join failed, and a
// crashed worker never came back (on a node taking 1,050 signed calls a second). Now
// it comes back and serves signed calls.
func TestWorkerRestartsOnANodeWithLargeNonceState(t *testing.T) {
	if raceEnabled {
		t.Skip("1.2 million nonces take minutes under the race detector: make test runs this without it (test-large)")
	}
	n := startNode(t, "workers-large", withWorkers(2))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := NewClient("http://"+n.AdminAddr(), n.Token()).Apply(ctx, workersBundle(1_000_000, `{"ok":true}`), false); err != nil {
		t.Fatal(err)
	}
	if st, code, _ := signedCall(t, n.DataAddr()); st != 200 {
		t.Fatalf("signed call: %d %s", st, code)
	}
	now := time.Now()
	for i := range 1_200_000 {
		n.nonces.Use(fmt.Appendf(nil, "large-%08d", i), now)
	}
	before := n.pool.pids()
	if err := syscall.Kill(before[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntilTrue(t, 20*time.Second, "worker 0 to be back and serving", func() bool {
		now := n.pool.pids()
		_, served := n.pool.servedIndex()
		return now[0] != 0 && now[0] != before[0] && served
	})
	for i := range 20 { // over both workers' connections
		if st, code, _ := signedCall(t, n.DataAddr()); st != 200 {
			t.Fatalf("signed call %d after the restart: %d %s", i, st, code)
		}
	}
}

// TestWorkersShareABurstOfConnections: forty keep-alive connections opened at once
// end up split evenly over two workers, whichever the kernel woke.
func TestWorkersShareABurstOfConnections(t *testing.T) {
	n := startNode(t, "workers-burst", withWorkers(2))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 40 {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", n.DataAddr(), 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, b := n.pool.bal.count(0).Load(), n.pool.bal.count(1).Load()
		if a+b == 40 {
			if a < 18 || b < 18 {
				t.Fatalf("40 connections split %d / %d over two workers", a, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s the workers count %d and %d connections of 40", a, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitUntilTrue(t, 5*time.Second, "closed connections to be counted out", func() bool {
		return n.pool.bal.count(0).Load()+n.pool.bal.count(1).Load() == 0
	})
}

func waitUntilTrue(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWorkersPinnedToCPUs: with one worker per CPU the node may use (two to four),
// each worker, every thread of it, runs on a CPU of its own, and the node itself is
// not pinned.
func TestWorkersPinnedToCPUs(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	cpus := allowed.Count()
	if cpus < 2 || cpus > 4 {
		t.Skipf("%d CPUs: the test runs one worker per CPU, for 2 to 4", cpus)
	}
	n := startNode(t, "workers-pinned", func(c *Config) {
		withWorkers(cpus)(c)
		c.PinWorkers = true
	})
	seen := map[string]bool{}
	for _, pid := range n.pool.pids() {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatal(err)
		}
		cpus := map[string]bool{}
		for _, task := range tasks {
			cpus[allowedCPUs(t, fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))] = true
		}
		if len(cpus) != 1 {
			t.Fatalf("worker %d's threads run on %v, want one CPU for all", pid, cpus)
		}
		for c := range cpus {
			if strings.ContainsAny(c, ",-") || seen[c] {
				t.Fatalf("worker %d on CPUs %q (taken: %v), want a CPU of its own", pid, c, seen)
			}
			seen[c] = true
		}
	}
	if own := allowedCPUs(t, "/proc/self/status"); !strings.ContainsAny(own, ",-") {
		t.Fatalf("the node process itself is pinned to %q", own)
	}
}

func allowedCPUs(t *testing.T, status string) string {
	t.Helper()
	b, err := os.ReadFile(status)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s: no Cpus_allowed_list", status)
	return ""
}

// TestRestartedWorkerLearnsTheClusterCounts: a worker started while another node has
// spent most of a quota learns that node's count before it serves (the state exchange
// with every counting member), so the cluster still admits exactly the quota.
func TestRestartedWorkerLearnsTheClusterCounts(t *testing.T) {
	c, workers, other := workersAndOneNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const limit = 90
	res, err := c.Nodes()[0].Client().Apply(ctx, workersBundle(limit, `{"ok":true}`), false)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitApplied(res.Index, 10*time.Second)
	waitServedUp(t, c)
	admitted := 0
	call := func(addr string) int {
		st, code, _ := signedCall(t, addr)
		if st != 200 && st != 429 {
			t.Fatalf("call: %d %s", st, code)
		}
		if st == 200 {
			admitted++
		}
		if admitted > limit {
			t.Fatalf("%d admitted under a quota of %d", admitted, limit)
		}
		return st
	}
	// The other node spends 60 (waiting out its budget refills), then goes quiet.
	deadline := time.Now().Add(10 * time.Second)
	for admitted < 60 {
		if time.Now().After(deadline) {
			t.Fatalf("the other node admitted %d of 60 in 10 s", admitted)
		}
		if call(other.DataAddr()) == 429 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, pid := range workers.pool.pids() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	before := workers.pool.pids()
	waitUntilTrue(t, 10*time.Second, "both workers back and serving", func() bool {
		now := workers.pool.pids()
		_, served := workers.pool.servedIndex()
		return now[0] != 0 && now[1] != 0 && now[0] != before[0] && now[1] != before[1] && served
	})
	// The new workers take what is left, and not a call more.
	deadline = time.Now().Add(15 * time.Second)
	for refusedInARow := 0; refusedInARow < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %d of %d admitted", admitted, limit)
		}
		if call(workers.DataAddr()) == 429 {
			if admitted >= limit {
				refusedInARow++
			} else {
				time.Sleep(10 * time.Millisecond)
			}
		} else {
			refusedInARow = 0
		}
	}
	if admitted != limit {
		t.Fatalf("%d admitted, want %d", admitted, limit)
	}
}

// TestPinnedCPU: a worker is pinned only when there is one per CPU the node may use,
// to the CPU of its slot; with fewer workers than CPUs none is.
func TestPinnedCPU(t *testing.T) {
	for _, c := range []struct {
		allowed       []int
		slot, workers int
		cpu           int
		ok            bool
	}{
		{[]int{0, 1}, 0, 2, 0, true},
		{[]int{0, 1}, 1, 2, 1, true},
		{[]int{4, 6, 9}, 2, 3, 9, true},
		{[]int{0, 1, 2, 3}, 1, 2, 0, false}, // two workers on a four-CPU host: placed by the kernel
		{[]int{0, 1}, 2, 3, 0, false},       // more workers than CPUs
		{nil, 0, 1, 0, false},
	} {
		cpu, ok := pinnedCPU(c.allowed, c.slot, c.workers)
		if ok != c.ok || (ok && cpu != c.cpu) {
			t.Errorf("pinnedCPU(%v, slot %d, %d workers) = %d, %v; want %d, %v", c.allowed, c.slot, c.workers, cpu, ok, c.cpu, c.ok)
		}
	}
}

// TestNodeServesThroughTheNetpoller: with --netpoller the data plane serves through
// the runtime's netpoller instead of the poller, in the node's process and in workers;
// without it, through the poller.
func TestNodeServesThroughTheNetpoller(t *testing.T) {
	for _, tc := range []struct {
		workers   int
		netpoller bool
	}{{0, true}, {0, false}, {2, true}, {2, false}} {
		t.Run(fmt.Sprintf("workers=%d/netpoller=%v", tc.workers, tc.netpoller), func(t *testing.T) {
			n := startNode(t, fmt.Sprintf("netpoller-%d-%v", tc.workers, tc.netpoller), func(cfg *Config) {
				if tc.workers > 0 {
					withWorkers(tc.workers)(cfg)
				}
				cfg.Netpoller = tc.netpoller
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			client := NewClient("http://"+n.AdminAddr(), n.Token())
			if _, err := client.Apply(ctx, workersBundle(1_000_000, `{"ok":true}`), false); err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if st, code, body := signedCall(t, n.DataAddr()); st != 200 || body != `{"ok":true}` {
					t.Fatalf("call %d: %d %s %s", i, st, code, body)
				}
			}
			if tc.workers == 0 {
				// The poller wraps the node's own listener; the netpoller leaves it be.
				if _, plain := n.dataLn.(*net.TCPListener); plain != tc.netpoller {
					t.Errorf("data listener is a %T", n.dataLn)
				}
				return
			}
			// A worker with the poller holds an epoll set of its own beside the runtime's.
			want := 2
			if tc.netpoller {
				want = 1
			}
			for _, pid := range n.pool.pids() {
				if got := epollSets(t, pid); got != want {
					t.Errorf("worker %d holds %d epoll sets, want %d", pid, got, want)
				}
			}
		})
	}
}

// epollSets counts the epoll descriptors process pid holds.
func epollSets(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == "anon_inode:[eventpoll]" {
			n++
		}
	}
	return n
}
