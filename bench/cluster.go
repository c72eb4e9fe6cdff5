package main

// The cluster's figures (issue 4), measured on real `tollgate node` processes on
// loopback: go run ./bench -cluster-figures
//
// What is measured is what a user sees from outside:
//
//   - write → served everywhere: an admin write changing a mock API's answer (POST
//     /v1/apis/fig/probe/rollback, between its two versions) is sent to each node in turn (as a load balancer would; a follower forwards it to
//     the leader). From the moment its 200 arrives, every node's data plane is polled
//     until it answers with the new body. The figure is the slowest node's delay.
//   - join → ready: from exec'ing `tollgate node --join` to its /readyz answering 200,
//     with 1,000 APIs in the config.
//   - committed writes per second: concurrent admin POST /v1/grants to the leader, each
//     answered only once committed and applied.
//   - failover: from kill -9 of the leader's process group to the first write a
//     survivor acknowledges (each survivor tried in turn, a few ms apart).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/tollgate/tollgate/node"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

var (
	clusterFigures  = flag.Bool("cluster-figures", false, "measure the cluster's figures on real `tollgate node` processes instead (writes bench/results/cluster-latest.md)")
	figWrites       = flag.Int("cluster-writes", 200, "with -cluster-figures: writes timed until served on every node, per cluster size")
	figKills        = flag.Int("cluster-kills", 3, "with -cluster-figures: leader kills per cluster size")
	figThroughput   = flag.Duration("cluster-throughput", 4*time.Second, "with -cluster-figures: how long committed writes per second are measured")
	figWriters      = flag.Int("cluster-writers", 16, "with -cluster-figures: concurrent writers for the writes-per-second figure")
	figAPIs         = flag.Int("cluster-apis", 1000, "with -cluster-figures: APIs in the config")
	figAdminToken   = "bench-cluster-token-" + randHex(8)
	errNotAccepted  = errors.New("write not accepted")
	figHTTP         = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	figProbeGroup   = "fig"
	figProbeAPIPath = "/probe"
)

// figNode is one `tollgate node` process of the figures' cluster.
type figNode struct {
	id                             string
	args                           []string
	dataDir, listen, admin, gossip string
	proc                           *child
	starts                         int
}

// figCluster is the figures' cluster and the lab it runs in.
type figCluster struct {
	l     *lab
	bin   string
	nodes []*figNode // running or killed, in start order
	p     *progress
	// retried counts timed writes answered 503 (an election) and sent again.
	retried int
}

// runClusterFigures measures the figures, prints the table and writes it to
// OUT/cluster-latest.md. It blocks; everything it starts is stopped on return.
func runClusterFigures(ctx context.Context, o options) error {
	tmp, err := os.MkdirTemp("", "tollgate-cluster-figures-")
	if err != nil {
		return err
	}
	cl := &cleanup{}
	cl.add(func() { os.RemoveAll(tmp) })
	defer cl.run()
	l := &lab{tmp: tmp, root: repoRoot(), cleanup: cl}
	p := newProgress(o.progress)
	began := time.Now()

	p.line("building tollgate")
	bin, err := l.buildTollgate(ctx, o.tollgateBin)
	if err != nil {
		return err
	}
	c := &figCluster{l: l, bin: bin, p: p}
	load1 := loadAverage()
	var rows []figRow

	// Three nodes, then the config: 1,000 mock APIs and the probe API.
	for i := range 3 {
		if _, _, err := c.startNode(ctx, i > 0); err != nil {
			return err
		}
	}
	p.line(fmt.Sprintf("3 nodes ready; applying %d APIs", *figAPIs))
	// Applied twice: the probe API then has two versions in RELEASE, answering "v1" and
	// "v2", and each timed write rolls it to the other one. (An apply is declarative —
	// it replaces the whole config — so a timed apply would carry all 1,000 APIs.)
	for _, v := range []string{"v1", "v2"} {
		if err := c.apply(ctx, c.nodes[0], configBundle(*figAPIs, v)); err != nil {
			return err
		}
	}
	if err := c.waitServedAll(ctx, "v2", 30*time.Second); err != nil {
		return err
	}

	version := 2
	for _, size := range []int{3, 5} {
		if size == 5 {
			// Two more nodes join the running cluster with the whole config in it.
			var joins []time.Duration
			for range 2 {
				d, _, err := c.startNode(ctx, true)
				if err != nil {
					return err
				}
				joins = append(joins, d)
			}
			rows = append(rows, figRow{what: fmt.Sprintf("`tollgate node --join` → /readyz 200, %d APIs in the config", *figAPIs),
				nodes: "3 → 5", ds: joins, note: "process start to ready, each of the 2 joins"})
		}
		if err := c.waitMembers(ctx, size, 20*time.Second); err != nil {
			return err
		}

		p.line(fmt.Sprintf("%d nodes: %d writes, each until served on every node", size, *figWrites))
		c.retried = 0
		served, acked, err := c.servedEverywhere(ctx, &version, *figWrites)
		if err != nil {
			return err
		}
		retried := ""
		if c.retried > 0 {
			retried = fmt.Sprintf("; %d answered 503 (an election) and were sent again, timed from the accepted attempt", c.retried)
		}
		rows = append(rows,
			figRow{what: "acknowledged write → served by every node's data plane", nodes: fmt.Sprint(size), ds: served,
				note: fmt.Sprintf("%d writes switching an API's answer, sent to each node in turn; every data plane polled every 250 µs%s", len(served), retried)},
			figRow{what: "write sent → acknowledged (admin POST …/rollback)", nodes: fmt.Sprint(size), ds: acked,
				note: "a follower forwards to the leader, answers once it serves the write too"})

		p.line(fmt.Sprintf("%d nodes: committed writes per second (%d writers, %v)", size, *figWriters, *figThroughput))
		wps, err := c.throughput(ctx, *figWriters, *figThroughput)
		if err != nil {
			return err
		}
		rows = append(rows, figRow{what: "committed writes per second", nodes: fmt.Sprint(size), rate: wps,
			note: fmt.Sprintf("admin POST /v1/grants to the leader, %d concurrent writers", *figWriters)})

		p.line(fmt.Sprintf("%d nodes: %d leader kills", size, *figKills))
		fail, restart, err := c.failovers(ctx, *figKills)
		if err != nil {
			return err
		}
		rows = append(rows,
			figRow{what: "kill -9 of the leader → a write accepted again", nodes: fmt.Sprint(size), ds: fail,
				note: "writes through the survivors in turn, every 5 ms"},
			figRow{what: "killed leader restarted → /readyz 200", nodes: fmt.Sprint(size), ds: restart,
				note: "same data dir; catches up from its log"})
	}

	md := figMarkdown(o, rows, load1, time.Since(began))
	fmt.Print(md)
	out := o.out
	if out == "" {
		out = filepath.Join(".", "bench-results")
		if l.root != "" {
			out = filepath.Join(l.root, "bench", "results")
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	file := filepath.Join(out, "cluster-latest.md")
	if err := os.WriteFile(file, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "results:", file)
	return nil
}

// configBundle is the figures' config: the node harness's test bundle (group g with
// apis mock APIs, GET /aN answering "aN", and app "app") plus the probe API
// answering probe.
func configBundle(apis int, probe string) *fsm.Bundle {
	b := node.TestBundle(apis)
	b.Groups = append(probeBundle(probe).Groups, b.Groups...)
	return b
}

// probeBundle sets the probe API's answer to body.
func probeBundle(body string) *fsm.Bundle {
	return &fsm.Bundle{Groups: []fsm.GroupSpec{{Name: figProbeGroup, APIs: []fsm.APISpec{{Name: "probe", APIDef: fsm.APIDef{
		Method: "GET", Path: figProbeAPIPath, Auth: fsm.AuthAnonymous,
		Backend: fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: body},
	}, Deploy: []fsm.Stage{fsm.StageRelease}}}}}}
}

// startNode starts a new node (joining the first live one when join) and waits until
// its /readyz answers 200; it returns the time from exec to ready.
func (c *figCluster) startNode(ctx context.Context, join bool) (time.Duration, *figNode, error) {
	var addrs [4]string
	for k := range addrs {
		var err error
		if addrs[k], err = freeAddr(); err != nil {
			return 0, nil, err
		}
	}
	id := fmt.Sprintf("fig-%d", len(c.nodes)+1)
	n := &figNode{id: id, dataDir: filepath.Join(c.l.tmp, id), listen: addrs[0], admin: addrs[1], gossip: addrs[3]}
	n.args = []string{"node", "--data", n.dataDir, "--listen", addrs[0], "--admin", addrs[1],
		"--raft", addrs[2], "--gossip", addrs[3], "--base-domain", baseDomain, "--node-id", id,
		"--subdomain-daily-limit", "0", "--log-level", "warn",
		// In process, as the README's cluster figures were measured: up to five nodes
		// of workers would crowd two CPUs with processes that measure nothing of raft.
		"--workers", "0"}
	if join {
		var to []string
		for _, o := range c.nodes {
			if o.up() {
				to = append(to, o.gossip)
			}
		}
		if len(to) == 0 {
			return 0, nil, errors.New("no live node to join")
		}
		n.args = append(n.args, "--join", strings.Join(to, ","))
	}
	c.nodes = append(c.nodes, n)
	d, err := c.exec(ctx, n)
	if err == nil {
		c.p.line(fmt.Sprintf("%s ready in %v", id, d.Round(time.Millisecond)))
	}
	return d, n, err
}

// exec starts n's process with its arguments (again, after a kill) and waits for
// /readyz 200.
func (c *figCluster) exec(ctx context.Context, n *figNode) (time.Duration, error) {
	n.starts++
	cmd := exec.Command(c.bin, n.args...)
	cmd.Env = append(os.Environ(), "TOLLGATE_ADMIN_TOKEN="+figAdminToken)
	start := time.Now()
	proc, err := startChild(n.id, cmd, filepath.Join(c.l.tmp, fmt.Sprintf("%s.%d.log", n.id, n.starts)))
	if err != nil {
		return 0, err
	}
	n.proc = proc
	c.l.cleanup.add(func() { proc.stop(10 * time.Second) })
	deadline := start.Add(60 * time.Second)
	for {
		if proc.exited() {
			return 0, fmt.Errorf("%s exited: %v: %s", n.id, proc.err, proc.tail(1500))
		}
		if code, _, err := figGet(ctx, "http://"+n.admin+"/readyz", ""); err == nil && code == 200 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not ready after 60s: %s", n.id, proc.tail(1500))
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

func (n *figNode) up() bool { return n.proc != nil && !n.proc.exited() }

// kill sends SIGKILL to n's process group and waits for it to exit.
func (n *figNode) kill() {
	_ = syscall.Kill(-n.proc.pid(), syscall.SIGKILL)
	<-n.proc.done
}

func (c *figCluster) live() []*figNode {
	var out []*figNode
	for _, n := range c.nodes {
		if n.up() {
			out = append(out, n)
		}
	}
	return out
}

// leader asks the live nodes' /v1/raft which one leads.
func (c *figCluster) leader(ctx context.Context, timeout time.Duration) (*figNode, error) {
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range c.live() {
			var st struct {
				Leader bool `json:"leader"`
			}
			if code, body, err := figGet(ctx, "http://"+n.admin+"/v1/raft", ""); err == nil && code == 200 &&
				json.Unmarshal(body, &st) == nil && st.Leader {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no leader among the live nodes after %v", timeout)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// waitMembers waits until the leader's raft configuration holds want servers, all alive.
func (c *figCluster) waitMembers(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if l, err := c.leader(ctx, time.Second); err == nil {
			var ms []struct {
				ID, Role, State string
			}
			code, body, err := figGet(ctx, "http://"+l.admin+"/v1/members", figAdminToken)
			if err == nil && code == 200 && json.Unmarshal(body, &ms) == nil {
				n := 0
				for _, m := range ms {
					if m.Role != "none" && m.State == "alive" {
						n++
					}
				}
				if n == want && len(ms) == want {
					return nil
				}
				last = string(body)
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("raft does not hold %d live members after %v: %s", want, timeout, last)
}

// apply POSTs b to n's /v1/apply; a 503 (an election) is retried for a few seconds.
func (c *figCluster) apply(ctx context.Context, n *figNode, b *fsm.Bundle) error {
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, resp, err := figPost(ctx, n, "/v1/apply", body)
		if err == nil && code == 200 {
			return nil
		}
		if time.Now().After(deadline) || (err == nil && code != 503) {
			return fmt.Errorf("apply on %s: %d %v %s", n.id, code, err, firstLines(string(resp), 2))
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// servedEverywhere makes writes, each rolling the probe API to its other version (so
// changing its answer), and times each
// from its acknowledgement to every live node's data plane answering the new body. It
// also returns each write's own latency (sent → acknowledged).
func (c *figCluster) servedEverywhere(ctx context.Context, version *int, writes int) (served, acked []time.Duration, err error) {
	nodes := c.live()
	for i := range writes {
		*version = 3 - *version // 1, 2, 1, ...
		want := fmt.Sprintf("v%d", *version)
		body, _ := json.Marshal(map[string]any{"stage": "RELEASE", "version": *version})
		to := nodes[i%len(nodes)]
		var sent, ack time.Time
		for deadline := time.Now().Add(10 * time.Second); ; {
			sent = time.Now()
			code, resp, err := figPost(ctx, to, "/v1/apis/"+figProbeGroup+"/probe/rollback", body)
			ack = time.Now()
			if err == nil && code == 200 {
				break
			}
			// 503: an election (on a loaded machine a leader can miss its 200 ms lease);
			// a client retries, and so does the bench — the write was not applied.
			if err != nil || code != 503 || ack.After(deadline) {
				return nil, nil, fmt.Errorf("write %d on %s: %d %v %s", i, to.id, code, err, firstLines(string(resp), 2))
			}
			c.retried++
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return nil, nil, err
			}
		}
		var slowest atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		for _, n := range nodes {
			wg.Go(func() {
				if err := waitBody(ctx, n.listen, want, 10*time.Second); err != nil {
					failed.Store(fmt.Errorf("%s: %w", n.id, err))
					return
				}
				d := int64(time.Since(ack))
				for cur := slowest.Load(); d > cur && !slowest.CompareAndSwap(cur, d); cur = slowest.Load() {
				}
			})
		}
		wg.Wait()
		if e, ok := failed.Load().(error); ok {
			return nil, nil, e
		}
		served = append(served, time.Duration(slowest.Load()))
		acked = append(acked, ack.Sub(sent))
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil { // isolated writes
			return nil, nil, err
		}
	}
	return served, acked, nil
}

// waitBody polls the probe API on the data plane at addr until it answers 200 with
// want (every 250 µs: the figure's resolution).
func waitBody(ctx context.Context, addr, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+figProbeAPIPath, nil)
	req.Host = figProbeGroup + "." + baseDomain
	var last string
	for {
		resp, err := figHTTP.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == want {
				return nil
			}
			last = fmt.Sprintf("%d %q", resp.StatusCode, firstLines(string(b), 1))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("data plane %s does not answer %q after %v (last: %s)", addr, want, timeout, last)
		}
		if err := sleepCtx(ctx, 250*time.Microsecond); err != nil {
			return err
		}
	}
}

// throughput runs writers concurrent grant writers against the leader for d and
// returns acknowledged (committed and applied) writes per second.
func (c *figCluster) throughput(ctx context.Context, writers int, d time.Duration) (float64, error) {
	l, err := c.leader(ctx, 5*time.Second)
	if err != nil {
		return 0, err
	}
	var ok atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i += writers {
				body, _ := json.Marshal(fsm.GrantSpec{App: "app", API: fmt.Sprintf("g/a%d", i%*figAPIs), Stages: []fsm.Stage{fsm.StageRelease}})
				code, resp, err := figPost(ctx, l, "/v1/grants", body)
				if err != nil || code != 200 {
					firstErr.CompareAndSwap(nil, fmt.Errorf("grant: %d %v %s", code, err, firstLines(string(resp), 1)))
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if e, isErr := firstErr.Load().(error); isErr && ok.Load() == 0 {
		return 0, e
	}
	return float64(ok.Load()) / time.Since(start).Seconds(), nil
}

// failovers kills the leader rounds times; each time it measures until a survivor
// acknowledges a write, then restarts the killed node and measures until it is ready.
func (c *figCluster) failovers(ctx context.Context, rounds int) (fail, restart []time.Duration, err error) {
	for r := range rounds {
		l, err := c.leader(ctx, 10*time.Second)
		if err != nil {
			return nil, nil, err
		}
		var survivors []*figNode
		for _, n := range c.live() {
			if n != l {
				survivors = append(survivors, n)
			}
		}
		body, _ := json.Marshal(fsm.GrantSpec{App: "app", API: fmt.Sprintf("g/a%d", r), Stages: []fsm.Stage{fsm.StageRelease}})
		l.kill()
		killed := time.Now()
		for i := 0; ; i++ {
			s := survivors[i%len(survivors)]
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			code, _, err := figPost(wctx, s, "/v1/grants", body)
			cancel()
			if err == nil && code == 200 {
				break
			}
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if time.Since(killed) > 20*time.Second {
				return nil, nil, fmt.Errorf("no write accepted 20s after the leader's kill (last: %d %v)", code, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		fail = append(fail, time.Since(killed))
		c.p.line(fmt.Sprintf("  kill %d: %s killed, writes accepted again after %v", r+1, l.id, fail[len(fail)-1].Round(time.Millisecond)))
		d, err := c.exec(ctx, l)
		if err != nil {
			return nil, nil, err
		}
		restart = append(restart, d)
		if err := c.waitMembers(ctx, len(c.nodes), 20*time.Second); err != nil {
			return nil, nil, err
		}
	}
	return fail, restart, nil
}

// waitServedAll waits until every live node's data plane answers the probe with want.
func (c *figCluster) waitServedAll(ctx context.Context, want string, timeout time.Duration) error {
	for _, n := range c.live() {
		if err := waitBody(ctx, n.listen, want, timeout); err != nil {
			return fmt.Errorf("%s: %w", n.id, err)
		}
	}
	return nil
}

func figGet(ctx context.Context, url, token string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := figHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func figPost(ctx context.Context, n *figNode, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.admin+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+figAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := figHTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// figRow is one line of the table: durations (percentiles shown) or a rate.
type figRow struct {
	what, nodes string
	ds          []time.Duration
	rate        float64
	note        string
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	// Nearest rank: the smallest value with at least q of the samples at or below it.
	k := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(len(s)-1, k))]
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func figMarkdown(o options, rows []figRow, load string, took time.Duration) string {
	var b strings.Builder
	cmd := strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " "))
	fmt.Fprintf(&b, "`%s` — %s, %d CPUs, %s; `tollgate node` processes on loopback, %d APIs in the config; load average at start %s; took %v\n\n",
		cmd, cpuModel(), runtime.NumCPU(), runtime.Version(), *figAPIs, load, took.Round(time.Second))
	b.WriteString("| figure | nodes | p50 | p99 | max | samples | how |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		if r.ds == nil {
			fmt.Fprintf(&b, "| %s | %s | %.0f /s | | | | %s |\n", r.what, r.nodes, r.rate, r.note)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s |\n", r.what, r.nodes,
			fmtDur(quantile(r.ds, 0.50)), fmtDur(quantile(r.ds, 0.99)), fmtDur(quantile(r.ds, 1)), len(r.ds), r.note)
	}
	b.WriteString("\nWith few samples, p99 is the largest but one or the largest (nearest rank).\n")
	return b.String()
}

// loadAverage is /proc/loadavg's three averages: others' load skews the figures.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}
