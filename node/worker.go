package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/tollgate/tollgate/cluster"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/ratelimit"
	"golang.org/x/sys/unix"
)

// RunWorker is a data plane worker's main: started by a node with Workers set (as
// `tollgate worker`), it serves the node's data plane listeners from the state the
// node sends it, counts quotas as a gossip member of its own and uses the node's
// shared nonce table, until the node tells it to drain or goes away. It returns
// when it has stopped.
func RunWorker() error {
	ctl := os.NewFile(workerFdControl, "control")
	conn, err := net.FileConn(ctl)
	ctl.Close()
	if err != nil {
		return fmt.Errorf("worker: control socket: %w", err)
	}
	defer conn.Close()
	fc := newFrameConn(conn)
	typ, payload, err := fc.read()
	if err != nil || typ != frameHello {
		return fmt.Errorf("worker: no hello from the node (%v)", err)
	}
	var h workerHello
	if err := json.Unmarshal(payload, &h); err != nil {
		return fmt.Errorf("worker: hello: %w", err)
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(h.LogLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", h.NodeID, "worker", h.Index)
	w, err := startWorker(h, fc, conn, log)
	if err != nil {
		log.Error("worker did not start", "err", err)
		return err
	}
	return w.run()
}

type dataWorker struct {
	h       workerHello
	log     *slog.Logger
	fc      *frameConn
	reg     *prometheus.Registry
	gossip  *cluster.Gossip
	limiter *ratelimit.Limiter
	nonces  *ratelimit.NonceStore
	proxy   *proxy.Proxy
	certs   certStore
	ready   atomic.Bool
	conn    net.Conn    // to the node
	stopped atomic.Bool // stop has begun: listeners closing is expected
	bal     *connBalance
	mesh    *meshTransport
}

func startWorker(h workerHello, fc *frameConn, conn net.Conn, log *slog.Logger) (_ *dataWorker, err error) {
	w := &dataWorker{h: h, log: log, fc: fc, conn: conn, reg: prometheus.NewRegistry()}
	if h.Pin {
		if pinned, err := pinToCPU(h.Index, h.Workers); err != nil {
			log.Warn("worker not pinned to a CPU", "err", err)
		} else if !pinned && h.Index == 0 {
			log.Info("workers not pinned: there is not one per CPU the node may use", "workers", h.Workers)
		}
	}
	reg := prometheus.WrapRegistererWith(prometheus.Labels{"worker": strconv.Itoa(h.Index)}, w.reg)
	var stack []func()
	defer func() {
		if err != nil {
			for i := len(stack) - 1; i >= 0; i-- {
				stack[i]()
			}
		}
	}()
	w.gossip, err = cluster.NewGossip(cluster.GossipConfig{
		NodeName:  workerName(h.NodeID, h.Index, os.Getpid()),
		BindAddr:  h.GossipHost,
		SecretKey: h.GossipKey,
		Meta:      cluster.NodeMeta{Role: cluster.RoleWorker},
	})
	if err != nil {
		return nil, err
	}
	stack = append(stack, func() { _ = w.gossip.Shutdown() })
	bf := os.NewFile(workerFdBalance, "balance")
	w.bal, err = mapBalance(bf, h.Index)
	bf.Close()
	if err != nil {
		return nil, err
	}
	mf := os.NewFile(workerFdMesh, "mesh")
	m, err := mapMesh(mf, h.Workers)
	mf.Close()
	if err != nil {
		return nil, err
	}
	w.mesh = newMeshTransport(w.gossip.View(quotaRoles...), m, w.bal, h.NodeID, h.Index)
	stack = append(stack, w.mesh.close)
	if w.limiter, err = ratelimit.New(ratelimit.Config{Transport: w.mesh, Registerer: reg}); err != nil {
		return nil, fmt.Errorf("quota limiter: %w", err)
	}
	stack = append(stack, w.limiter.Close)
	nonceFile := fmt.Sprintf("/proc/self/fd/%d", workerFdNonces)
	if w.nonces, err = ratelimit.NewNonceStore(ratelimit.NonceConfig{SharedFile: nonceFile, MaxEntries: h.NonceCapacity}); err != nil {
		return nil, fmt.Errorf("nonce store: %w", err)
	}
	stack = append(stack, w.nonces.Close)
	// Join before serving, then exchange state with every member that counts quotas:
	// a join's push/pull brings the counts of the member it reaches, and the node's own
	// member counts none. So the first calls are decided against the cluster's counts.
	if len(h.Join) > 0 {
		if _, err := w.gossip.Join(h.Join); err != nil {
			return nil, fmt.Errorf("join the node's gossip: %w", err)
		}
		var counting []string
		for _, m := range w.gossip.Members() {
			if m.State == cluster.MemberAlive && m.Name != w.gossip.LocalName() && slices.Contains(quotaRoles, m.Meta.Role) {
				counting = append(counting, m.Addr)
			}
		}
		if len(counting) > 0 {
			if _, err := w.gossip.Join(counting); err != nil {
				log.Warn("no counting member answered the state exchange", "err", err)
			}
		}
	}
	w.gossip.OnEvent(func(cluster.MemberEvent) { w.limiter.MembersChanged() })
	w.limiter.Start()
	w.proxy, err = proxy.New(proxy.Config{
		Netpoller:           h.Netpoller,
		EventLoop:           !h.Netpoller, // a worker runs the data plane on one P
		LoopKeepsP:          true,         // and its clients and backends are other processes
		BaseDomain:          h.BaseDomain,
		MaxBodySize:         h.MaxBodySize,
		Registerer:          reg,
		Ready:               w.ready.Load,
		NodeID:              fmt.Sprintf("%s/w%d", h.NodeID, h.Index),
		Logger:              log,
		Nonces:              w.nonces,
		Limiter:             w.limiter,
		SubdomainDailyLimit: h.SubdomainDailyLimit,
		TrustedProxies:      h.TrustedProxies,
		ConnState:           w.bal.connState,
	})
	if err != nil {
		return nil, err
	}
	w.awaitSiblings(5 * time.Second)
	if err := w.serve(workerFdData, "data", false); err != nil {
		return nil, err
	}
	if h.TLS {
		if err := w.serve(workerFdTLS, "tls", true); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// serve starts serving the inherited listener at fd.
func (w *dataWorker) serve(fd uintptr, name string, withTLS bool) error {
	f := os.NewFile(fd, name)
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	if !w.h.Netpoller {
		ln = proxy.NewPollListener(ln)
	}
	ln = balancedListener{Listener: ln, b: w.bal, n: w.h.Workers}
	if withTLS {
		ln = tls.NewListener(ln, &tls.Config{GetCertificate: w.certs.getCertificate, MinVersion: tls.VersionTLS12})
	}
	go func() {
		// A listener that fails outside a drain leaves the worker serving nothing:
		// hang up on the node, which drains this worker's leftovers and starts another.
		if err := w.proxy.Serve(ln); err != nil && !w.stopped.Load() {
			w.log.Error("listener failed; stopping so the node starts another worker", "listener", name, "err", err)
			w.conn.Close()
		}
	}()
	return nil
}

// run follows the node's frames until a drain, or until the node goes away.
func (w *dataWorker) run() error {
	for {
		typ, payload, err := w.fc.read()
		if err != nil {
			// The node is gone (killed, or it closed us): do not outlive it.
			w.log.Warn("lost the node; stopping", "err", err)
			w.stop(5 * time.Second)
			return nil
		}
		switch typ {
		case frameState:
			s, err := fsm.ReadSnapshot(bytes.NewReader(payload))
			if err != nil {
				w.log.Error("state from the node does not decode", "err", err)
				continue
			}
			w.apply(s)
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], s.Index)
			if err := w.fc.write(frameServed, b[:]); err != nil {
				w.stop(5 * time.Second)
				return nil
			}
		case frameReady:
			w.ready.Store(len(payload) == 1 && payload[0] == 1)
		case frameGather:
			_ = w.fc.write(frameMetric, w.gather())
		case frameDrain:
			wait := 10 * time.Second
			if len(payload) == 8 {
				wait = time.Duration(binary.LittleEndian.Uint64(payload)) * time.Millisecond
			}
			w.ready.Store(false)
			w.stop(wait)
			return nil
		}
	}
}

// apply serves s: policies first, then the routes that refer to them (as the node
// does in process).
func (w *dataWorker) apply(s *fsm.State) {
	ps, err := trafficPolicies(s)
	if err == nil {
		err = w.limiter.SetPolicies(withSubdomainCap(ps, w.h.SubdomainDailyLimit))
	}
	if err != nil {
		w.log.Error("traffic policies not applied", "err", err)
	}
	w.proxy.Update(s)
	if err := w.certs.update(s); err != nil {
		w.log.Error("TLS certificates", "err", err)
	}
}

// gather encodes the worker's metrics for the node's /metrics.
func (w *dataWorker) gather() []byte {
	mfs, err := w.reg.Gather()
	if err != nil {
		w.log.Warn("metrics", "err", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeProtoDelim))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			w.log.Warn("metrics", "err", err)
			break
		}
	}
	return buf.Bytes()
}

// stop drains: in-flight requests get up to wait, then the worker leaves the gossip
// (the others drop its quota reservations at once) and stops.
func (w *dataWorker) stop(wait time.Duration) {
	w.stopped.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := w.proxy.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		w.log.Warn("data plane shutdown", "err", err)
	}
	w.limiter.Close()
	w.mesh.close()
	w.nonces.Close()
	_ = w.gossip.Leave(time.Second)
	_ = w.gossip.Shutdown()
}

// pinToCPU runs every thread of the process, and so the threads they start, on the
// slot-th of the CPUs the process may use, when the node runs one worker per such CPU
// (pinnedCPU). Threads the runtime starts while the pass runs are caught by the
// second pass.
func pinToCPU(slot, workers int) (pinned bool, err error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return false, err
	}
	var cpus []int
	for c := range 1024 {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	cpu, ok := pinnedCPU(cpus, slot, workers)
	if !ok {
		return false, nil
	}
	var one unix.CPUSet
	one.Set(cpu)
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return false, err
		}
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				if err := unix.SchedSetaffinity(tid, &one); err != nil {
					return false, fmt.Errorf("thread %d: %w", tid, err)
				}
			}
		}
	}
	return true, nil
}

// pinnedCPU picks worker slot's CPU among the allowed ones: only when there is one
// worker per allowed CPU. With fewer workers (a container held to two CPUs' worth of
// time on a larger host, say), every node would pin its workers to the same first
// CPUs of the host, whoever else runs there; then the kernel places them.
func pinnedCPU(allowed []int, slot, workers int) (cpu int, ok bool) {
	if len(allowed) == 0 || workers != len(allowed) || slot < 0 || slot >= workers {
		return 0, false
	}
	return allowed[slot], true
}

// Roles of the members a transport reaches: those that count quotas (nodes serving
// in process, and workers) and those that gossip nonces (nodes, and the controls of
// nodes with workers, which send their workers' nonces).
var (
	quotaRoles = []string{cluster.RoleNode, cluster.RoleWorker}
	nonceRoles = []string{cluster.RoleNode, cluster.RoleControl}
)

// awaitSiblings waits, up to limit, until the worker's gossip lists every other worker
// of its node. A worker that took a window's first budget while it saw no sibling
// would reserve the whole quota, and the others would get none of it while it stays
// busy.
func (w *dataWorker) awaitSiblings(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		names := w.mesh.MemberNames()
		all := true
		for slot := range w.h.Workers {
			pid := w.bal.pid(slot).Load()
			if slot != w.h.Index && (pid == 0 || !slices.Contains(names, workerName(w.h.NodeID, slot, int(pid)))) {
				all = false
			}
		}
		if all {
			w.limiter.MembersChanged() // splits the next windows among them, now
			return
		}
		if time.Now().After(deadline) {
			w.log.Warn("serving before every sibling worker is in gossip", "waited", limit)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
