package node

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/tollgate/tollgate/fsm"
	"golang.org/x/sys/unix"
)

// workerPool runs a node's data plane in worker processes of one P each, so that a
// connection's work stays on one CPU, as nginx's workers do: in a process with one P
// per CPU the Go scheduler moves a connection's goroutine (and the state it touches)
// between CPUs from one wake-up to the next. Every worker accepts on the node's
// listeners, serves the state the node sends it, counts quotas as a gossip member of
// its own and uses the node's nonce table, which is shared memory.
//
// A worker that dies is started again; one that does not answer a state in time is
// killed and started again.
type workerPool struct {
	n     *Node
	log   *slog.Logger
	cmd   []string
	files []*os.File // inherited after the control socket: nonces, balance, mesh, data, TLS
	bal   *connBalance

	mu       sync.Mutex
	procs    []*workerProc // by slot; nil while a slot restarts
	state    []byte        // the latest state, encoded
	ready    bool
	stopping bool

	gatherMu sync.Mutex
	wg       sync.WaitGroup
	exits    prometheus.Counter // workers that exited while the node ran
	quit     chan struct{}      // closed by stop and kill
	quitOnce sync.Once
}

type workerProc struct {
	slot   int
	cmd    *exec.Cmd
	conn   net.Conn
	fc     *frameConn
	served uint64 // under the pool's mu
	acked  bool   // it has served a state
	gather chan []byte
	exited chan struct{}
}

// stateWriteTimeout is how long a worker may take to read a state before it is
// taken for stuck and restarted.
const stateWriteTimeout = 10 * time.Second

func newWorkerPool(n *Node, files []*os.File) *workerPool {
	cmd := n.cfg.WorkerCommand
	if len(cmd) == 0 {
		exe, err := os.Executable()
		if err != nil {
			exe = os.Args[0]
		}
		cmd = []string{exe, "worker"}
	}
	p := &workerPool{n: n, log: n.log, cmd: cmd, files: files, procs: make([]*workerProc, n.cfg.Workers), quit: make(chan struct{})}
	p.exits = prometheus.NewCounter(prometheus.CounterOpts{Name: "tollgate_worker_exits_total",
		Help: "Data plane workers that exited (crashed or were killed) while the node ran; each is started again."})
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_workers_serving",
		Help: "Data plane workers running, of --workers."}, func() float64 {
		n := 0
		for _, pid := range p.pids() {
			if pid != 0 {
				n++
			}
		}
		return float64(n)
	})
	n.reg.MustRegister(p.exits, live)
	return p
}

// start runs every slot's supervisor; the first state to serve is s.
func (p *workerPool) start(s *fsm.State) {
	p.publish(s) // no worker yet: each gets it when it starts
	for slot := range p.procs {
		p.wg.Add(1)
		go p.supervise(slot)
	}
}

func encodeState(s *fsm.State) ([]byte, error) {
	var buf bytes.Buffer
	if err := fsm.WriteSnapshot(&buf, s); err != nil {
		return nil, fmt.Errorf("encode state for the workers: %w", err)
	}
	return buf.Bytes(), nil
}

// publish sends s to every worker; the node serves it once every live worker says so
// (served).
func (p *workerPool) publish(s *fsm.State) {
	b, err := encodeState(s)
	if err != nil {
		p.log.Error("state not sent to the workers", "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = b
	for _, w := range p.procs {
		if w != nil {
			p.sendLocked(w, frameState, b)
		}
	}
}

// setReady tells the workers whether their /readyz says ready.
func (p *workerPool) setReady(ready bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ready = ready
	for _, w := range p.procs {
		if w != nil {
			p.sendLocked(w, frameReady, readyByte(ready))
		}
	}
}

func readyByte(ready bool) []byte {
	if ready {
		return []byte{1}
	}
	return []byte{0}
}

// sendLocked writes a frame to w; a worker that cannot take it in time is killed (its
// supervisor starts another, which gets the latest state). p.mu is held.
func (p *workerPool) sendLocked(w *workerProc, typ byte, payload []byte) {
	_ = w.conn.SetWriteDeadline(time.Now().Add(stateWriteTimeout))
	if err := w.fc.write(typ, payload); err != nil {
		p.log.Warn("worker does not take frames; restarting it", "worker", w.slot, "err", err)
		_ = w.cmd.Process.Kill()
	}
}

// servedIndex is the lowest state index every live worker serves, and whether there
// is one.
func (p *workerPool) servedIndex() (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var low uint64
	found := false
	for _, w := range p.procs {
		if w == nil {
			continue
		}
		if !w.acked {
			return 0, false // a new worker has not served yet
		}
		if !found || w.served < low {
			low, found = w.served, true
		}
	}
	return low, found
}

// supervise keeps slot's worker running until the pool stops.
func (p *workerPool) supervise(slot int) {
	defer p.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		p.mu.Lock()
		stopping := p.stopping
		p.mu.Unlock()
		if stopping {
			return
		}
		started := time.Now()
		w, err := p.spawn(slot)
		if err != nil {
			p.log.Error("worker did not start", "worker", slot, "err", err)
		} else {
			<-w.exited
			p.bal.reset(slot) // its connections went with it
			p.mu.Lock()
			p.procs[slot] = nil
			stopping = p.stopping
			p.mu.Unlock()
			if stopping {
				return
			}
			p.exits.Inc()
			p.log.Error("worker exited; starting it again", "worker", slot, "err", w.cmd.ProcessState)
			p.n.noteServed() // the others may now be the lowest
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-p.quit:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// spawn starts slot's worker, says hello and hands it the latest state.
func (p *workerPool) spawn(slot int) (*workerProc, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "control"), os.NewFile(uintptr(fds[1]), "control")
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	cmd := exec.Command(p.cmd[0], p.cmd[1:]...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }), "GOMAXPROCS=1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = append([]*os.File{theirs}, p.files...)
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		conn.Close()
		return nil, err
	}
	w := &workerProc{slot: slot, cmd: cmd, conn: conn, fc: newFrameConn(conn), gather: make(chan []byte, 1), exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		conn.Close()
		close(w.exited)
	}()
	hello, _ := json.Marshal(p.hello(slot))
	p.mu.Lock()
	if p.stopping { // stop or kill ran while it started
		p.mu.Unlock()
		_ = cmd.Process.Kill()
		return w, nil
	}
	p.procs[slot] = w
	p.bal.pid(slot).Store(int64(cmd.Process.Pid))
	p.sendLocked(w, frameHello, hello)
	p.sendLocked(w, frameState, p.state)
	p.sendLocked(w, frameReady, readyByte(p.ready))
	p.mu.Unlock()
	go p.read(w)
	return w, nil
}

func (p *workerPool) hello(slot int) workerHello {
	cfg := p.n.cfg
	host, _, _ := net.SplitHostPort(p.n.gossip.Addr())
	level := "info"
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError} {
		if p.log.Enabled(context.Background(), l) {
			level = l.String()
			break
		}
	}
	return workerHello{
		NodeID: cfg.NodeID, Index: slot, BaseDomain: cfg.BaseDomain, MaxBodySize: cfg.MaxBodySize,
		NonceCapacity: cfg.NonceCapacity, SubdomainDailyLimit: cfg.SubdomainDailyLimit,
		TrustedProxies: cfg.TrustedProxies, GossipHost: host, GossipKey: cfg.GossipKey,
		Join: append([]string{p.n.gossip.Addr()}, cfg.Join...), TLS: p.n.tlsLn != nil, LogLevel: level, Workers: len(p.procs), Pin: cfg.PinWorkers, Netpoller: cfg.Netpoller,
	}
}

// read handles w's frames until its socket closes.
func (p *workerPool) read(w *workerProc) {
	for {
		typ, payload, err := w.fc.read()
		if err != nil {
			return
		}
		switch typ {
		case frameServed:
			if len(payload) != 8 {
				continue
			}
			p.mu.Lock()
			w.served, w.acked = binary.LittleEndian.Uint64(payload), true
			p.mu.Unlock()
			p.n.noteServed()
		case frameMetric:
			select {
			case w.gather <- payload:
			default:
			}
		}
	}
}

// Gather collects every live worker's metrics (each labelled with its worker slot),
// for the node's /metrics.
func (p *workerPool) Gather() ([]*dto.MetricFamily, error) {
	p.gatherMu.Lock()
	defer p.gatherMu.Unlock()
	p.mu.Lock()
	var live []*workerProc
	for _, w := range p.procs {
		if w != nil {
			select {
			case <-w.gather: // a late answer to an earlier request
			default:
			}
			p.sendLocked(w, frameGather, nil)
			live = append(live, w)
		}
	}
	p.mu.Unlock()
	var out []*dto.MetricFamily
	var errs []error
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
	for _, w := range live {
		var b []byte
		select {
		case b = <-w.gather:
		case <-w.exited:
			continue
		case <-timeout.C:
			errs = append(errs, fmt.Errorf("worker %d did not send its metrics in 2s", w.slot))
			continue
		}
		dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.NewFormat(expfmt.TypeProtoDelim))
		for {
			mf := &dto.MetricFamily{}
			if err := dec.Decode(mf); err != nil {
				if !errors.Is(err, io.EOF) {
					errs = append(errs, fmt.Errorf("worker %d metrics: %w", w.slot, err))
				}
				break
			}
			out = append(out, mf)
		}
	}
	return out, errors.Join(errs...)
}

// stop drains every worker within wait and waits for them to exit, killing those that
// outlast it.
func (p *workerPool) stop(wait time.Duration) {
	p.mu.Lock()
	p.stopping = true
	p.quitOnce.Do(func() { close(p.quit) })
	var live []*workerProc
	var ms [8]byte
	binary.LittleEndian.PutUint64(ms[:], uint64(wait/time.Millisecond))
	for _, w := range p.procs {
		if w != nil {
			p.sendLocked(w, frameDrain, ms[:])
			live = append(live, w)
		}
	}
	p.mu.Unlock()
	deadline := time.NewTimer(wait + 3*time.Second) // drain, then leave the gossip
	defer deadline.Stop()
	for _, w := range live {
		select {
		case <-w.exited:
		case <-deadline.C:
			p.kill()
		}
	}
	p.wg.Wait()
}

// kill stops every worker at once, as a crash of the node would.
func (p *workerPool) kill() {
	p.mu.Lock()
	p.stopping = true
	p.quitOnce.Do(func() { close(p.quit) })
	var live []*workerProc
	for _, w := range p.procs {
		if w != nil {
			_ = w.cmd.Process.Kill()
			live = append(live, w)
		}
	}
	p.mu.Unlock()
	for _, w := range live {
		<-w.exited
	}
}

// pids returns the running workers' process ids, by slot (0 for a slot restarting).
func (p *workerPool) pids() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, len(p.procs))
	for i, w := range p.procs {
		if w != nil {
			out[i] = w.cmd.Process.Pid
		}
	}
	return out
}

// listenerFile returns a listener's socket as a file a worker can inherit.
func listenerFile(ln net.Listener) (*os.File, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("data plane listener is a %T, not TCP", ln)
	}
	return tl.File()
}

// startWorkers hands the listeners to a pool of workers and starts them on the state
// raft restored.
func (n *Node) startWorkers() error {
	bf, err := newBalanceFile()
	if err != nil {
		return err
	}
	n.workerFiles = append(n.workerFiles, bf)
	bal, err := mapBalance(bf, -1)
	if err != nil {
		return err
	}
	mf, err := newMeshFile(n.cfg.Workers)
	if err != nil {
		return err
	}
	n.workerFiles = append(n.workerFiles, mf)
	for _, ln := range []net.Listener{n.dataLn, n.tlsLn} {
		if ln == nil {
			continue
		}
		f, err := listenerFile(ln)
		if err != nil {
			return err
		}
		n.workerFiles = append(n.workerFiles, f)
	}
	n.pool = newWorkerPool(n, n.workerFiles)
	n.pool.bal = bal
	n.pool.start(n.fsm.State())
	return nil
}

// closeWorkerFiles closes what the node kept for its workers, and the listeners.
func (n *Node) closeWorkerFiles() {
	for _, f := range n.workerFiles {
		f.Close()
	}
	n.dataLn.Close()
	if n.tlsLn != nil {
		n.tlsLn.Close()
	}
}
