package ratelimit_test

// The figures of issue 5 ("Figures to report"): over-admission under full load at 3
// and 5 nodes, and the nonce replay window across nodes. They take three to five minutes
// and load every core, so they only run when asked:
//
//	TOLLGATE_RATELIMIT_FIGURES=1 go test -run TestFigures -v ./ratelimit/
//
// Memory per million keys is BenchmarkMemoryPerMillionKeys.

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/ratelimit"
)

const figuresEnv = "TOLLGATE_RATELIMIT_FIGURES"

func skipUnlessFigures(t *testing.T) {
	t.Helper()
	if os.Getenv(figuresEnv) == "" {
		t.Skipf("set %s=1 to measure the figures (three to five minutes, every core busy)", figuresEnv)
	}
}

// figurePolicies are hour windows, so that a minute boundary never splits a run (and
// an hour boundary is waited out before each run, see avoidHourBoundary).
var figurePolicies = []ratelimit.Policy{
	{Name: "fig-100", Window: ratelimit.Hour, API: 100},
	{Name: "fig-10k", Window: ratelimit.Hour, API: 10_000},
	{Name: "fig-1M", Window: ratelimit.Hour, API: 1_000_000},
	{Name: "fig-busy", Window: ratelimit.Hour, API: 1 << 50}, // never reached
}

// startFigureNodes is startNodes with the figure policies added.
func startFigureNodes(t *testing.T, count int) []*node {
	t.Helper()
	nodes := startNodes(t, count)
	ps := append(slices.Clone(testPolicies), figurePolicies...)
	for _, n := range nodes {
		if err := n.l.SetPolicies(ps); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// avoidHourBoundary waits past the next UTC hour boundary when it is less than d away.
func avoidHourBoundary(t *testing.T, d time.Duration) {
	now := time.Now().UTC()
	next := now.Truncate(time.Hour).Add(time.Hour)
	if next.Sub(now) < d {
		t.Logf("waiting %v for the hour boundary", next.Sub(now)+time.Second)
		time.Sleep(next.Sub(now) + time.Second)
	}
}

type overRun struct {
	spread               string
	nodes, callers       int
	minMembers           int // the fewest live members any node saw during the run
	limit                int64
	admitted, calls      int64
	toQuota, total       time.Duration
	counted              []int64 // each node's count after the run
	splitByWindow, timed bool
}

// The spreads of calls over the nodes in fullLoad.
const (
	spreadEven   = "even"     // each caller round-robin over every node, from its own offset
	spreadSkewed = "skewed"   // half of each caller's calls on node 1, the rest round-robin over the others
	spreadOne    = "one node" // every call on node 1 (the others hold parts they do not use)
)

// fullLoad spends a key's quota with callers goroutines calling Allow as fast as they
// can, no pause between calls, spread over the nodes as spread says (uneven spreads
// make nodes spend their parts at different speeds and refill from what is left while
// the others still spend: the race the bound in doc.go is about). It stops once the
// quota is reached and nothing more was admitted for quiet (so every budget a node
// held has been spent or released), or once nothing was admitted for stuck (the quota
// is not reached: under-admission, reported), or at the deadline.
func fullLoad(nodes []*node, policy, subject string, limit int64, callers int, spread string, quiet, stuck, deadline time.Duration) overRun {
	r := overRun{spread: spread, nodes: len(nodes), callers: callers, limit: limit, minMembers: len(nodes)}
	pick := func(w, i int) int {
		switch spread {
		case spreadSkewed:
			if i%2 == 0 {
				return 0
			}
			return 1 + (w+i/2)%(len(nodes)-1)
		case spreadOne:
			return 0
		}
		return (w + i) % len(nodes)
	}
	var admitted, calls, lastAdmit atomic.Int64 // lastAdmit: ns since start
	var stop atomic.Bool
	handles := make([]*ratelimit.Counter, len(nodes))
	for i, n := range nodes {
		handles[i] = n.l.Handle(policy, ratelimit.DimAPI, subject, false)
	}
	ws, _ := ratelimit.Hour.Bounds(time.Now())
	var wg sync.WaitGroup
	start := time.Now()
	for w := range callers {
		wg.Go(func() {
			var mine, myCalls, myLast int64
			for i := 0; !stop.Load(); i++ {
				k := pick(w, i)
				now := time.Now()
				if ok, _ := nodes[k].l.Allow(handles[k], now); ok {
					mine++
					myLast = int64(now.Sub(start))
				}
				myCalls++
				if myCalls%1024 == 0 { // publish now and then: the monitor watches
					admitted.Add(mine)
					calls.Add(1024)
					mine = 0
					for {
						old := lastAdmit.Load()
						if myLast <= old || lastAdmit.CompareAndSwap(old, myLast) {
							break
						}
					}
				}
			}
			admitted.Add(mine)
			calls.Add(myCalls % 1024)
			for {
				old := lastAdmit.Load()
				if myLast <= old || lastAdmit.CompareAndSwap(old, myLast) {
					break
				}
			}
		})
	}
	// Monitor: stop when the admitted total has not moved for quiet (stuck below the
	// limit); watch the membership meanwhile.
	last, since := int64(-1), time.Now()
	for {
		time.Sleep(5 * time.Millisecond)
		for _, n := range nodes {
			r.minMembers = min(r.minMembers, n.g.NumMembers())
		}
		a := admitted.Load()
		if a != last {
			last, since = a, time.Now()
		}
		if q := time.Since(since); q >= stuck || a >= limit && q >= quiet {
			break
		}
		if time.Since(start) >= deadline {
			r.timed = true
			break
		}
	}
	stop.Store(true)
	wg.Wait()
	r.total = time.Since(start)
	r.admitted, r.calls = admitted.Load(), calls.Load()
	r.toQuota = time.Duration(lastAdmit.Load())
	we, _ := ratelimit.Hour.Bounds(time.Now())
	r.splitByWindow = !we.Equal(ws)
	return r
}

// counted is converged without stopping the test: it reports the nodes whose count
// is not want after 3 s.
func counted(t *testing.T, nodes []*node, policy, subject string, want int64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		var got []int64
		ok := true
		for _, n := range nodes {
			c := n.l.Count(n.l.Handle(policy, ratelimit.DimAPI, subject, false), time.Now())
			got = append(got, c)
			ok = ok && c == want
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s/%s: nodes count %v after 3 s, want %d everywhere", policy, subject, got, want)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFiguresOverAdmission(t *testing.T) {
	skipUnlessFigures(t)
	type cfg struct {
		policy  string
		limit   int64
		callers int
	}
	// More callers than cores: the load generator is never waiting for one of them.
	cfgs := []cfg{{"fig-100", 100, 4}, {"fig-10k", 10_000, 8}, {"fig-1M", 1_000_000, 16}}
	const reps = 3
	var rows []overRun
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%dnodes", size), func(t *testing.T) {
			nodes := startFigureNodes(t, size)
			for i, c := range cfgs {
				for _, spread := range []string{spreadEven, spreadSkewed, spreadOne} {
					for rep := range reps {
						avoidHourBoundary(t, time.Minute)
						subject := fmt.Sprintf("fig-%d-%d-%s-%d-%d", size, i, spread, rep, time.Now().UnixNano())
						r := fullLoad(nodes, c.policy, subject, c.limit, c.callers, spread, 300*time.Millisecond, 2*time.Second, 8*time.Second)
						rows = append(rows, r)
						// Every node ends with the same count: what was admitted, once.
						counted(t, nodes, c.policy, subject, r.admitted)
						if r.splitByWindow {
							t.Errorf("%s at %d nodes: the run crossed an hour boundary", c.policy, size)
						}
						if r.timed && spread != spreadOne {
							t.Errorf("%s at %d nodes (%s): still admitting after the deadline", c.policy, size, spread)
						}
						switch d := r.admitted - c.limit; {
						case d > tolerance(c.limit):
							t.Errorf("%s at %d nodes (%s): admitted %d, over the limit %d by more than %d", c.policy, size, r.spread, r.admitted, c.limit, tolerance(c.limit))
						case -d > tolerance(c.limit) && spread == spreadOne:
							// Known (see the report of issue 5): with every call on one node,
							// the idle nodes keep re-reserving parts of the remainder, so the
							// quota is reached only after many release rounds. Reported in the
							// table, not failed here.
							t.Logf("%s at %d nodes (%s): UNDER-ADMISSION, %d of %d after %v", c.policy, size, r.spread, r.admitted, c.limit, r.total.Round(time.Millisecond))
						case -d > tolerance(c.limit):
							t.Errorf("%s at %d nodes (%s): admitted %d, under the limit %d by more than %d", c.policy, size, r.spread, r.admitted, c.limit, tolerance(c.limit))
						}
						t.Logf("%d nodes, limit %d, %s: admitted %d of %d calls; last admitted at %v, run %v, fewest members %d",
							size, c.limit, r.spread, r.admitted, r.calls, r.toQuota.Round(time.Millisecond), r.total.Round(time.Millisecond), r.minMembers)
					}
				}
			}
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nOver-admission under full load (hour window, one API key, callers calling without pause, GOMAXPROCS %d):\n", runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "%d runs per row; admitted and times are the range over the runs, over-admission the worst.\n\n", reps)
	b.WriteString("| nodes | limit | spread | callers | admitted | over (admitted − limit), worst | over %, worst | calls made per run | last admission at | run | fewest members seen |\n")
	b.WriteString("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := 0; i < len(rows); i += reps {
		g := rows[i:min(i+reps, len(rows))]
		r := g[0]
		aMin, aMax := r.admitted, r.admitted
		cMin, cMax := r.calls, r.calls
		mm := r.minMembers
		qMin, qMax := r.toQuota, r.toQuota
		tMin, tMax := r.total, r.total
		for _, x := range g[1:] {
			aMin, aMax = min(aMin, x.admitted), max(aMax, x.admitted)
			cMin, cMax = min(cMin, x.calls), max(cMax, x.calls)
			qMin, qMax = min(qMin, x.toQuota), max(qMax, x.toQuota)
			tMin, tMax = min(tMin, x.total), max(tMax, x.total)
			mm = min(mm, x.minMembers)
		}
		over := aMax - r.limit
		if aMin-r.limit < 0 && -(aMin-r.limit) > over { // report under-admission if worse
			over = aMin - r.limit
		}
		span := func(a, b int64) string {
			if a == b {
				return fmt.Sprint(a)
			}
			return fmt.Sprintf("%d–%d", a, b)
		}
		dspan := func(a, b time.Duration) string {
			return fmt.Sprintf("%v–%v", a.Round(time.Millisecond), b.Round(time.Millisecond))
		}
		fmt.Fprintf(&b, "| %d | %d | %s | %d | %s | %+d | %+.4f%% | %s | %s | %s | %d |\n", r.nodes, r.limit, r.spread, r.callers,
			span(aMin, aMax), over, 100*float64(over)/float64(r.limit), span(cMin, cMax), dspan(qMin, qMax), dspan(tMin, tMax), mm)
	}
	t.Log(b.String())
}

// replayWindow measures, per nonce, the time from its first use on one node until
// every other node refuses it (polled every 50 µs), with the source node rotating and
// the phase against the flush varied. Under load, background callers keep the cores
// busy with quota checks meanwhile.
func replayWindow(t *testing.T, nodes []*node, count int, tag string) []time.Duration {
	t.Helper()
	lat := make([]time.Duration, 0, count)
	for i := range count {
		nonce := fmt.Appendf(nil, "fig-%s-%d-%06d-%d", tag, len(nodes), i, time.Now().UnixNano())
		src := nodes[i%len(nodes)]
		start := time.Now()
		if !src.ns.Use(nonce, start) {
			t.Fatalf("nonce %d refused on first use", i)
		}
		deadline := start.Add(2 * time.Second)
		for _, d := range nodes {
			if d == src {
				continue
			}
			for !d.ns.Seen(nonce, time.Now()) {
				if time.Now().After(deadline) {
					t.Fatalf("nonce %d not on %s after 2s", i, d.name)
				}
				time.Sleep(50 * time.Microsecond)
			}
		}
		lat = append(lat, time.Since(start))
		for _, d := range nodes {
			if d != src && d.ns.Use(nonce, time.Now()) {
				t.Fatalf("nonce %d replayed on %s", i, d.name)
			}
		}
		time.Sleep(time.Duration(i%7) * 300 * time.Microsecond)
	}
	slices.Sort(lat)
	return lat
}

// stallWatch measures how late a 1 ms sleep wakes up while it runs: on a shared
// machine a late wake-up is the process waiting for a core, and every timer in it
// (flushes, resends, the poll above) is late by as much. It reports the largest
// overshoot and how many exceeded 10 ms.
func stallWatch() (stop func() (worst time.Duration, over10ms int)) {
	var worst time.Duration
	var over10ms int
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			a := time.Now()
			time.Sleep(time.Millisecond)
			d := time.Since(a) - time.Millisecond
			worst = max(worst, d)
			if d > 10*time.Millisecond {
				over10ms++
			}
		}
	})
	return func() (time.Duration, int) {
		close(done)
		wg.Wait()
		return worst, over10ms
	}
}

func TestFiguresNonceReplayWindow(t *testing.T) {
	skipUnlessFigures(t)
	const count = 300
	type row struct {
		nodes         int
		load          string
		p50, p99, max time.Duration
		stall         time.Duration
		stalls        int
	}
	var rows []row
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%dnodes", size), func(t *testing.T) {
			nodes := startFigureNodes(t, size)
			watch := stallWatch()
			lat := replayWindow(t, nodes, count, "idle")
			st, sts := watch()
			rows = append(rows, row{size, "idle", lat[count/2], lat[count*99/100], lat[count-1], st, sts})

			// The same while 2×GOMAXPROCS callers spin on quota checks on every node
			// (a key whose quota is never reached: every call is admitted and counted).
			var stop atomic.Bool
			var wg sync.WaitGroup
			busy := make([]*ratelimit.Counter, len(nodes))
			for i, n := range nodes {
				busy[i] = n.l.Handle("fig-busy", ratelimit.DimAPI, "busy", false)
			}
			for w := range 2 * runtime.GOMAXPROCS(0) {
				wg.Go(func() {
					for i := w; !stop.Load(); i++ {
						k := i % len(nodes)
						nodes[k].l.Allow(busy[k], time.Now())
						if i%64 == 0 {
							runtime.Gosched()
						}
					}
				})
			}
			watch = stallWatch()
			lat = replayWindow(t, nodes, count, "busy")
			st, sts = watch()
			stop.Store(true)
			wg.Wait()
			rows = append(rows, row{size, "callers spinning on quota checks", lat[count/2], lat[count*99/100], lat[count-1], st, sts})
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nNonce replay window across nodes (first use on one node until every other node refuses it; %d nonces per row, GOMAXPROCS %d):\n\n", count, runtime.GOMAXPROCS(0))
	b.WriteString("| nodes | load | p50 | p99 | max | worst 1ms-sleep overshoot | overshoots > 10ms |\n|---:|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %v | %v | %v | %v | %d |\n", r.nodes, r.load,
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.max.Round(10*time.Microsecond),
			r.stall.Round(100*time.Microsecond), r.stalls)
	}
	t.Log(b.String())
}
