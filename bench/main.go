package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// options are the bench's flags.
type options struct {
	Duration     time.Duration `json:"duration"`
	Warmup       time.Duration `json:"warmup"`
	Rounds       int           `json:"rounds"`
	Conns        int           `json:"conns"`
	Scenarios    string        `json:"scenarios,omitempty"`
	Targets      string        `json:"targets"`
	Profile      bool          `json:"profile,omitempty"`
	Quick        bool          `json:"quick,omitempty"`
	NginxWorkers int           `json:"nginxWorkers"`
	// CompareWorkers runs tollgate-b with a worker per CPU, against tollgate-workers.
	CompareWorkers bool `json:"compareWorkers,omitempty"`
	// NonceCapacity is the Tollgate nodes' --nonce-capacity (0: their default).
	NonceCapacity int `json:"nonceCapacity,omitempty"`
	out           string
	tollgateBin   string
	compareBin    string
	progress      io.Writer
}

func main() {
	if runChild() {
		return
	}
	var o options
	flag.DurationVar(&o.Duration, "duration", 5*time.Second, "measured time per target per round")
	flag.DurationVar(&o.Warmup, "warmup", time.Second, "warm-up per target per round, not measured")
	flag.IntVar(&o.Rounds, "rounds", 3, "rounds; each round runs every target once, in rotating order")
	flag.IntVar(&o.Conns, "conns", 64, "connections, each with one outstanding request")
	flag.StringVar(&o.Scenarios, "scenarios", "", "comma-separated substrings of scenario names to run (default all)")
	flag.StringVar(&o.Targets, "targets", strings.Join(defaultTargets, ","), "comma-separated targets (also: "+tTollgatePerCPU+" and "+tBareLoop+", experiments)")
	flag.BoolVar(&o.Profile, "profile", false, "after the rounds, profile Tollgate under load (CPU, heap, allocs) into the results directory")
	flag.BoolVar(&o.Quick, "quick", false, "a short smoke run: 1 round × 1 s, 16 conns, scenario anon-64B")
	flag.IntVar(&o.NginxWorkers, "nginx-workers", 2, "nginx worker_processes")
	flag.StringVar(&o.out, "out", "", "results directory (default bench/results in the repository)")
	flag.StringVar(&o.tollgateBin, "tollgate-bin", "", "a prebuilt tollgate binary (default: go build ./cmd/tollgate)")
	flag.StringVar(&o.compareBin, "compare-bin", "", "a second tollgate binary, measured as target "+tTollgateB+" in the same rounds (an A/B of two builds)")
	flag.IntVar(&o.NonceCapacity, "nonce-capacity", 0, "Tollgate nodes' --nonce-capacity (default: the node's own, unless the run signs more calls than it holds)")
	flag.BoolVar(&o.CompareWorkers, "compare-workers", false, "with -compare-bin: run "+tTollgateB+" with a worker per CPU and compare it with "+tTollgateWorkers+" (not "+tTollgate+")")
	list := flag.Bool("list", false, "list the scenarios and exit")
	flag.Parse()
	if *list {
		for _, s := range scenarios {
			fmt.Printf("%-12s %s\n", s.name, s.desc)
		}
		return
	}
	if o.Quick {
		o.Rounds, o.Duration, o.Warmup, o.Conns = 1, time.Second, 250*time.Millisecond, 16
		if o.Scenarios == "" {
			o.Scenarios = "anon-64B"
		}
	}
	o.progress = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *clusterFigures { // bench/cluster.go
		if err := runClusterFigures(ctx, o); err != nil {
			stop()
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	rep, err := run(ctx, o)
	if rep != nil {
		fmt.Print(rep.markdown())
		if rep.files != "" {
			fmt.Fprintln(os.Stderr, rep.files)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run starts the backend and the targets, measures every selected scenario,
// writes the results and stops everything it started. It blocks.
func run(ctx context.Context, o options) (rep *report, err error) {
	if o.Rounds < 1 || o.Conns < 1 || o.Duration <= 0 {
		return nil, errors.New("-rounds, -conns and -duration must be positive")
	}
	scs := selectScenarios(o.Scenarios)
	if len(scs) == 0 {
		return nil, fmt.Errorf("no scenario matches %q (see -list)", o.Scenarios)
	}
	want := map[string]bool{}
	for _, t := range strings.Split(o.Targets, ",") {
		want[strings.TrimSpace(t)] = true
	}
	if o.compareBin != "" {
		want[tTollgateB] = true
	} else if want[tTollgateB] || o.CompareWorkers {
		return nil, fmt.Errorf("target %s and -compare-workers need -compare-bin", tTollgateB)
	}
	for t := range want {
		if !strings.Contains(","+strings.Join(allTargets, ",")+",", ","+t+",") {
			return nil, fmt.Errorf("unknown target %q (have %s)", t, strings.Join(allTargets, ", "))
		}
	}
	if o.progress == nil {
		o.progress = io.Discard
	}
	if o.NonceCapacity == 0 {
		o.NonceCapacity = nonceCapacityFor(o, scs, runtime.NumCPU())
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return nil, err
	}
	cl := &cleanup{}
	cl.add(func() { os.RemoveAll(tmp) })
	defer cl.run()

	l := &lab{
		tmp: tmp, self: self, root: repoRoot(), cleanup: cl, nonceCapacity: o.NonceCapacity,
		env: &env{host: benchGroup + "." + baseDomain, appKey: benchAppKey, appSecret: "bench-secret-" + randHex(8)},
	}
	p := newProgress(o.progress)
	rep = newReport(o, scs)
	probe := startCrossCPUProbe()
	defer probe.close()
	rep.out = o.out
	if rep.out == "" {
		if l.root != "" {
			rep.out = filepath.Join(l.root, "bench", "results")
		} else {
			rep.out = filepath.Join(".", "bench-results")
		}
	}
	note := func(format string, a ...any) {
		s := fmt.Sprintf(format, a...)
		rep.Notes = append(rep.Notes, s)
		p.line("note: " + s)
	}

	p.line("starting backend")
	if err := l.startBackend(ctx); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	var targets []*target
	var node *tollgateNode
	for _, name := range allTargets {
		if !want[name] {
			continue
		}
		p.line("starting " + name)
		var t *target
		var err error
		switch name {
		case tDirect:
			t = l.direct()
		case tNginx:
			t, err = l.nginx(ctx, o.NginxWorkers)
		case tBareProxy:
			t, err = l.bareProxy(ctx)
		case tBareLoop:
			t, err = l.bareLoop(ctx)
		case tTollgate:
			t, node, err = l.tollgate(ctx, name, o.tollgateBin, 1, false, 0)
		case tTollgateWorkers:
			t, _, err = l.tollgate(ctx, name, o.tollgateBin, 1, false, runtime.NumCPU())
		case tTollgateB:
			workers := 0
			if o.CompareWorkers {
				workers = runtime.NumCPU()
			}
			t, _, err = l.tollgate(ctx, name, o.compareBin, 1, false, workers)
		case tTollgate3:
			t, _, err = l.tollgate(ctx, name, o.tollgateBin, 3, false, 0)
		case tTollgatePerCPU:
			t, _, err = l.tollgate(ctx, name, o.tollgateBin, runtime.NumCPU(), true, 0)
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err != nil {
			if why, ok := isSkip(err); ok {
				note("%s skipped: %s", name, why)
			} else {
				note("%s failed to start: %v", name, err)
			}
			continue
		}
		targets = append(targets, t)
	}

	for si := range scs {
		sc := &scs[si]
		var active []*target
		for _, t := range targets {
			if t.prepare != nil {
				p.line(fmt.Sprintf("[%s] preparing %s", sc.name, t.name))
				if err := t.prepare(ctx, sc); err != nil {
					if ctx.Err() != nil {
						return rep, ctx.Err()
					}
					rep.skip(sc.name, t.name, err.Error())
					note("%s/%s skipped: %v", sc.name, t.name, err)
					continue
				}
			}
			if err := waitProbe(ctx, t.addrs[0], sc.newBuilder(l.env, 0), sc.body, 0); err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				rep.skip(sc.name, t.name, err.Error())
				note("%s/%s skipped: %v", sc.name, t.name, err)
				continue
			}
			active = append(active, t)
		}
		for r := range o.Rounds {
			for k := range active {
				t := active[(k+r)%len(active)]
				label := fmt.Sprintf("[%d/%d %s] round %d/%d %-9s", si+1, len(scs), sc.name, r+1, o.Rounds, t.name)
				res, cpu, err := measure(ctx, l, t, sc, o, probe, func(el time.Duration, n int64) {
					p.live(fmt.Sprintf("%s %4.1f/%.1fs %8.0f req/s", label, el.Seconds(), o.Duration.Seconds(), float64(n)/el.Seconds()))
				})
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				if err != nil {
					note("%s/%s round %d: %v", sc.name, t.name, r+1, err)
				}
				rep.add(sc.name, t.name, res, cpu)
				placement := ""
				if len(cpu.crossCPU) > 0 {
					placement = fmt.Sprintf("  cross-CPU %.0f ns", median(cpu.crossCPU))
				}
				p.line(fmt.Sprintf("%s %8.0f req/s  p99 %.2f ms%s", label, float64(res.Requests)/res.Seconds, ms(res.hist.ValueAtQuantile(99)), placement))
			}
		}
		if o.Profile {
			if node == nil || !contains(active, tTollgate) {
				note("%s: no profile, Tollgate is not running this scenario", sc.name)
			} else if err := profileScenario(ctx, l, node, active, sc, o, rep, p); err != nil {
				note("%s: profile: %v", sc.name, err)
			}
		}
	}
	rep.finish()
	if err := rep.write(rep.out); err != nil {
		return rep, err
	}
	return rep, nil
}

// segmentCPU is the CPU seconds of one measured segment: the target's processes,
// the backend's, and the bench's own (the load generator, which shares the cores);
// and the cross-CPU round trips sampled meanwhile (see crossCPUProbe), which say
// where the host had put the vCPUs.
type segmentCPU struct {
	target, backend, loadgen cpuTimes
	crossCPU                 []float64 // ns
}

// measure runs one segment against t, with the CPU seconds of the target, the
// backend and the load generator over the measured part.
func measure(ctx context.Context, l *lab, t *target, sc *scenario, o options, probe *crossCPUProbe, progress func(time.Duration, int64)) (res loadResult, cpu segmentCPU, err error) {
	var c0, b0, g0 cpuTimes
	var from time.Time
	res, err = runLoad(ctx, loadSpec{
		addrs: t.addrs, conns: o.Conns, warmup: o.Warmup, duration: o.Duration,
		build: func(conn int) buildFunc { return sc.newBuilder(l.env, conn) },
		onStart: func() {
			c0, b0, g0 = treeCPU(t.pids()...), treeCPU(l.backend.pid()), selfCPU()
			from = time.Now()
		},
		onEnd: func() {
			cpu = segmentCPU{
				target:   treeCPU(t.pids()...).sub(c0),
				backend:  treeCPU(l.backend.pid()).sub(b0),
				loadgen:  selfCPU().sub(g0),
				crossCPU: probe.between(from, time.Now()),
			}
		},
		progress: progress,
	}, sc.body)
	if res.hist == nil {
		res.hist = newHist()
	}
	return res, cpu, err
}

// profileScenario runs one more, unreported Tollgate segment while fetching
// a CPU profile, then the heap and allocs profiles.
func profileScenario(ctx context.Context, l *lab, n *tollgateNode, active []*target, sc *scenario, o options, rep *report, p *progress) error {
	var t *target
	for _, a := range active {
		if a.name == tTollgate {
			t = a
		}
	}
	dir := rep.profileDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	secs := max(1, int(o.Duration.Seconds()))
	errc := make(chan error, 1)
	go func() {
		// Start after the warm-up so the profile sees steady load only.
		if err := sleepCtx(ctx, o.Warmup); err != nil {
			errc <- err
			return
		}
		errc <- n.fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs),
			filepath.Join(dir, sc.name+"-cpu.pprof"), time.Duration(secs+30)*time.Second)
	}()
	po := o
	po.Duration = time.Duration(secs)*time.Second + 500*time.Millisecond
	label := fmt.Sprintf("[%s] profiling tollgate", sc.name)
	if _, _, err := measure(ctx, l, t, sc, po, nil, func(el time.Duration, k int64) {
		p.live(fmt.Sprintf("%s %4.1fs %8.0f req/s", label, el.Seconds(), float64(k)/el.Seconds()))
	}); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	for _, kind := range []string{"heap", "allocs"} {
		if err := n.fetch(ctx, "/debug/pprof/"+kind, filepath.Join(dir, sc.name+"-"+kind+".pprof"), 30*time.Second); err != nil {
			return err
		}
	}
	p.line(label + ": wrote " + dir)
	rep.Profiles = append(rep.Profiles, dir)
	return nil
}

func contains(ts []*target, name string) bool {
	for _, t := range ts {
		if t.name == name {
			return true
		}
	}
	return false
}

// progress writes the progress line: rewritten in place on a terminal, one
// line per finished step otherwise.
type progress struct {
	w   io.Writer
	tty bool
	n   int // width of the live line
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) live(s string) {
	if !p.tty {
		return
	}
	fmt.Fprintf(p.w, "\r%-*s", p.n, s)
	p.n = max(p.n, len(s))
}

func (p *progress) line(s string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r%-*s\n", p.n, s)
		p.n = 0
		return
	}
	fmt.Fprintln(p.w, s)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
