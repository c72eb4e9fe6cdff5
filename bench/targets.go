package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Target names, in report order.
const (
	tDirect    = "direct"
	tNginx     = "nginx"
	tBareProxy = "bareproxy"
	// tTollgate is one node serving in its own process (--workers 0).
	tTollgate = "tollgate"
	// tTollgateB is a second build of the node (-compare-bin) in the same rounds: an
	// A/B of two builds that shares the rounds' drift and placement with the first.
	tTollgateB = "tollgate-b"
	tTollgate3 = "tollgate-3" // three nodes in process on this machine, load spread over all
	// tTollgateWorkers is the node as it runs by default: its data plane in one worker
	// process per CPU (--workers), each with one P, so a connection's work stays on
	// its CPU.
	tTollgateWorkers = "tollgate-workers"
	// tTollgatePerCPU is an experiment, not a deployment: one node per CPU, each
	// with one P (GOMAXPROCS=1) and not clustered, the load spread over them. It
	// measured what a worker-per-CPU data plane could reach before --workers was
	// built. The nodes share one nonce table (--nonce-file on /dev/shm) but not
	// their quota counters. Not run by default.
	tTollgatePerCPU = "tollgate-percpu"
	// tBareLoop is an experiment: the floor of a Go proxy built as nginx is, one
	// single-threaded epoll loop per CPU (see bareloop_linux.go). Not run by default.
	tBareLoop = "bareloop"
)

var allTargets = []string{tDirect, tNginx, tBareProxy, tBareLoop, tTollgate, tTollgateWorkers, tTollgateB, tTollgate3, tTollgatePerCPU}

// defaultTargets are what a run measures unless -targets says otherwise.
var defaultTargets = []string{tDirect, tNginx, tBareProxy, tTollgate, tTollgateWorkers, tTollgate3}

// errSkip marks a target or scenario that cannot run here; the run reports
// the rest and says why.
type errSkip struct{ why string }

func (e errSkip) Error() string { return e.why }

func skipf(format string, a ...any) error { return errSkip{fmt.Sprintf(format, a...)} }

// target is one way of reaching the backend.
type target struct {
	name  string
	addrs []string // host:port the load generator dials, round-robin per connection
	procs []*child // processes whose CPU is the target's
	// prepare readies the target for a scenario (Tollgate applies its file);
	// nil when there is nothing to do.
	prepare func(ctx context.Context, sc *scenario) error
}

// pids returns the root PIDs of the target's processes.
func (t *target) pids() []int {
	var p []int
	for _, c := range t.procs {
		p = append(p, c.pid())
	}
	return p
}

// lab holds the run's temporary directory and every child it started.
type lab struct {
	tmp     string
	self    string // this binary, re-executed for child modes
	root    string // repository root ("" when unknown)
	cleanup *cleanup
	env     *env
	backend *child

	tollgateBin string // built once, shared by the one- and three-node targets
	tollgateErr error
	// nonceCapacity is the nodes' --nonce-capacity (0: their default).
	nonceCapacity int
}

// startSelf re-executes this binary in a child mode.
func (l *lab) startSelf(ctx context.Context, mode, listen, upstream string, env ...string) (*child, error) {
	cmd := exec.Command(l.self)
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childListen+"="+listen, childUpstream+"="+upstream)
	cmd.Env = append(cmd.Env, env...)
	log, err := os.CreateTemp(l.tmp, mode+"-*.log")
	if err != nil {
		return nil, err
	}
	log.Close()
	c, err := startChild(mode, cmd, log.Name())
	if err != nil {
		return nil, err
	}
	l.cleanup.add(func() { c.stop(3 * time.Second) })
	if err := waitTCP(ctx, c, listen, 10*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// startBackend starts the fixed backend.
func (l *lab) startBackend(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	c, err := l.startSelf(ctx, modeBackend, addr, "")
	if err != nil {
		return err
	}
	l.backend = c
	l.env.backend = addr
	return nil
}

func (l *lab) direct() *target {
	return &target{name: tDirect, addrs: []string{l.env.backend}, procs: []*child{l.backend}}
}

func (l *lab) bareProxy(ctx context.Context) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	c, err := l.startSelf(ctx, modeBareProxy, addr, l.env.backend)
	if err != nil {
		return nil, err
	}
	return &target{name: tBareProxy, addrs: []string{addr}, procs: []*child{c}}, nil
}

// bareLoop starts one bareloop process per CPU, each with one P, on one
// SO_REUSEPORT address, as nginx runs a worker per CPU.
func (l *lab) bareLoop(ctx context.Context) (*target, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	t := &target{name: tBareLoop, addrs: []string{addr}}
	for range runtime.NumCPU() {
		c, err := l.startSelf(ctx, modeBareLoop, addr, l.env.backend, "GOMAXPROCS=1")
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, c)
	}
	return t, nil
}

// nginxBinary finds nginx on PATH or in /usr/sbin.
func nginxBinary() string {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// nginxVersion returns "nginx/1.x.y" or "".
func nginxVersion() string {
	bin := nginxBinary()
	if bin == "" {
		return ""
	}
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	s := strings.TrimSpace(string(out))
	if i := strings.Index(s, "nginx/"); i >= 0 {
		return s[i:]
	}
	return s
}

const nginxConf = `# generated by tollgate bench
worker_processes %d;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    upstream backend {
        server %[3]s;
        keepalive 256;
    }
    server {
        listen %[4]s reuseport;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }
    }
}
`

// nginx starts nginx proxying to the backend.
func (l *lab) nginx(ctx context.Context, workers int) (*target, error) {
	bin := nginxBinary()
	if bin == "" {
		return nil, skipf("nginx not installed (apt-get install -y nginx-light)")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(l.tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, workers, dir, l.env.backend, addr), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	c, err := startChild("nginx", cmd, filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	l.cleanup.add(func() { c.stop(3 * time.Second) })
	if err := waitTCP(ctx, c, addr, 10*time.Second); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, fmt.Errorf("%w: %s", err, b)
	}
	return &target{name: tNginx, addrs: []string{addr}, procs: []*child{c}}, nil
}

// tollgateNode is a running `tollgate node` and how to administer it.
type tollgateNode struct {
	bin, dataDir, admin, listen, gossip string
	token                               string
	proc                                *child
}

// buildTollgate builds ./cmd/tollgate into the temporary directory once, or
// uses bin when given.
func (l *lab) buildTollgate(ctx context.Context, bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if l.tollgateBin != "" || l.tollgateErr != nil {
		return l.tollgateBin, l.tollgateErr
	}
	if l.root == "" {
		l.tollgateErr = skipf("not inside the tollgate module: pass -tollgate-bin")
		return "", l.tollgateErr
	}
	out := filepath.Join(l.tmp, "tollgate")
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", out, "./cmd/tollgate")
	cmd.Dir = l.root
	if msg, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		l.tollgateErr = skipf("go build ./cmd/tollgate failed: %s", firstLines(string(msg), 2))
		return "", l.tollgateErr
	}
	l.tollgateBin = out
	return out, nil
}

// startAttempts bounds the starts of one node whose ports were taken meanwhile.
const startAttempts = 3

// retryPortTaken calls start until it succeeds, fails for another reason than a port
// in use, or has failed attempts times, calling reset before each new try. A port
// freeAddr found free can be taken before the node binds it, by any process's
// outgoing connection (both come from the ephemeral range); the node then exits at
// once, and another start on other ports is all it takes.
func retryPortTaken[T any](ctx context.Context, attempts int, start func() (T, error), reset func()) (T, error) {
	v, err := start()
	for try := 1; err != nil && try < attempts && strings.Contains(err.Error(), "address already in use") && ctx.Err() == nil; try++ {
		reset()
		v, err = start()
	}
	return v, err
}

// tollgate starts a cluster of size nodes on free ports (the first
// bootstraps, the others join its gossip address), waits for every /readyz,
// and returns it as target name. With perCPU the nodes are not joined and run
// with one P each, and every scenario is applied to each. workers above 0 runs
// each node's data plane in that many worker processes.
func (l *lab) tollgate(ctx context.Context, name, bin string, size int, perCPU bool, workers int) (_ *target, _ *tollgateNode, err error) {
	bin, err = l.buildTollgate(ctx, bin)
	if err != nil {
		return nil, nil, err
	}
	t := &target{name: name}
	defer func() {
		if err != nil { // a partial cluster would only steal CPU from the others
			for _, c := range t.procs {
				c.stop(5 * time.Second)
			}
		}
	}()
	var nodes []*tollgateNode
	nonceFile := ""
	if perCPU {
		// The nodes share one nonce table in memory, as workers of one node would.
		dir, err := os.MkdirTemp("/dev/shm", "tollgate-bench-")
		if err != nil {
			return nil, nil, fmt.Errorf("%s: a directory for the shared nonce file: %w", name, err)
		}
		l.cleanup.add(func() { os.RemoveAll(dir) })
		nonceFile = filepath.Join(dir, "nonces")
	}
	start := func(i int, id string) (*tollgateNode, error) {
		var addrs [4]string
		for k := range addrs {
			var err error
			if addrs[k], err = freeAddr(); err != nil {
				return nil, err
			}
		}
		n := &tollgateNode{bin: bin, dataDir: filepath.Join(l.tmp, id), listen: addrs[0], admin: addrs[1], gossip: addrs[3]}
		args := []string{"node", "--data", n.dataDir, "--listen", addrs[0], "--admin", addrs[1],
			"--raft", addrs[2], "--gossip", addrs[3], "--base-domain", baseDomain, "--node-id", id,
			// The benchmark calls the default subdomain far more than 1,000 times a day.
			"--subdomain-daily-limit", "0"}
		if i > 0 && !perCPU {
			args = append(args, "--join", nodes[0].gossip)
		}
		if nonceFile != "" {
			args = append(args, "--nonce-file", nonceFile)
		}
		if l.nonceCapacity > 0 {
			args = append(args, "--nonce-capacity", strconv.Itoa(l.nonceCapacity))
		}
		// Always said: the node's own default is a worker per CPU, and the in-process
		// targets must stay in process.
		args = append(args, "--workers", strconv.Itoa(workers))
		cmd := exec.Command(bin, args...)
		if perCPU {
			cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		}
		c, err := startChild(id, cmd, filepath.Join(l.tmp, id+".log"))
		if err != nil {
			return nil, err
		}
		n.proc = c
		l.cleanup.add(func() { c.stop(10 * time.Second) })
		if err := n.waitReady(ctx, 30*time.Second); err != nil {
			c.stop(5 * time.Second)
			return nil, err
		}
		tok, err := os.ReadFile(filepath.Join(n.dataDir, "admin-token"))
		if err != nil {
			c.stop(5 * time.Second)
			return nil, fmt.Errorf("%s admin token: %w", id, err)
		}
		n.token = strings.TrimSpace(string(tok))
		// Only a node that came up is the target's: its CPU is read from /proc by pid,
		// and a failed try's pid may be another process's by now.
		t.procs = append(t.procs, c)
		return n, nil
	}
	for i := range size {
		id := fmt.Sprintf("%s-%d", name, i+1)
		n, err := retryPortTaken(ctx, startAttempts, func() (*tollgateNode, error) { return start(i, id) },
			func() { _ = os.RemoveAll(filepath.Join(l.tmp, id)) })
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, n)
		t.addrs = append(t.addrs, n.listen)
	}
	t.prepare = func(ctx context.Context, sc *scenario) error {
		if !perCPU {
			return l.applyScenario(ctx, nodes[0], t.addrs, sc)
		}
		for i, n := range nodes {
			if err := l.applyScenario(ctx, n, t.addrs[i:i+1], sc); err != nil {
				return err
			}
		}
		return nil
	}
	return t, nodes[0], nil
}

// waitReady polls the admin /readyz until it answers 200.
func (n *tollgateNode) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: time.Second}
	var last string
	for time.Now().Before(deadline) {
		if n.proc.exited() {
			return fmt.Errorf("%s exited: %v: %s", n.proc.name, n.proc.err, n.proc.tail(1500))
		}
		resp, err := hc.Get("http://" + n.admin + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s not ready after %v (last: %s): %s", n.proc.name, timeout, last, n.proc.tail(1500))
}

// applyScenario applies the scenario's declarative file through n and waits
// until a probe request to every address answers 200 with the expected body.
func (l *lab) applyScenario(ctx context.Context, n *tollgateNode, addrs []string, sc *scenario) error {
	var y strings.Builder
	fmt.Fprintf(&y, "# generated by tollgate bench, scenario %s\n", sc.name)
	sc.config(l.env, &y)
	file := filepath.Join(l.tmp, "scenario-"+sc.name+".yaml")
	if err := os.WriteFile(file, []byte(y.String()), 0o644); err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(actx, n.bin, "apply", "-f", file)
	cmd.Env = append(os.Environ(), "TOLLGATE_ADMIN=http://"+n.admin, "TOLLGATE_ADMIN_TOKEN="+n.token)
	cmd.Dir = l.tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return skipf("apply %s: %v: %s", filepath.Base(file), err, firstLines(string(out), 3))
	}
	for _, addr := range addrs {
		if err := waitProbe(ctx, addr, sc.newBuilder(l.env, 0), sc.body, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// waitProbe sends probe requests to addr until one answers 200 with a body of
// wantBody bytes (any when 0), or timeout passes.
func waitProbe(ctx context.Context, addr string, build buildFunc, wantBody int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		status, code, body, err := probe(addr, build)
		switch {
		case err != nil:
			last = err.Error()
		case status == 200 && (wantBody == 0 || len(body) == wantBody):
			return nil
		default:
			last = fmt.Sprintf("status %d %s, %d-byte body", status, code, len(body))
		}
		if time.Now().After(deadline) {
			return skipf("probe %s: %s", addr, last)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// fetch GETs an admin URL with the token into file; it blocks.
func (n *tollgateNode) fetch(ctx context.Context, path, file string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.admin+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+n.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	s = strings.Join(lines, " | ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func isSkip(err error) (string, bool) {
	var s errSkip
	if errors.As(err, &s) {
		return s.why, true
	}
	return "", false
}
