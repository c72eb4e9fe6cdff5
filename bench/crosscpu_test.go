package main

import (
	"runtime"
	"testing"
	"time"
)

// TestCrossCPUProbeSamples runs the probe's pinned threads for real and checks that
// it samples a plausible round trip, then stops.
func TestCrossCPUProbeSamples(t *testing.T) {
	if runtime.NumCPU() < 2 || runtime.GOMAXPROCS(0) < 2 {
		t.Skip("the probe needs two CPUs")
	}
	from := time.Now()
	p := startCrossCPUProbe()
	if p == nil {
		t.Skip("threads cannot be pinned here")
	}
	// A sample needs both pinned threads running at once; on a machine busy with
	// other tests some are dropped, so the wait is generous.
	deadline := time.Now().Add(15 * time.Second)
	var got []float64
	for len(got) < 2 && time.Now().Before(deadline) {
		time.Sleep(crossCPUEvery)
		got = p.between(from, time.Now())
	}
	p.close()
	if len(got) < 2 {
		t.Fatalf("%d samples in 15 s, want at least 2", len(got))
	}
	for _, ns := range got {
		// A cache line crosses between two cores in tens to hundreds of ns; below 5
		// the threads did not wait for each other, above 100 µs they were not
		// timing cache lines.
		if ns < 5 || ns > 100_000 {
			t.Errorf("round trip %.0f ns, outside any plausible range", ns)
		}
	}
	if n := len(p.between(time.Now().Add(time.Hour), time.Now().Add(2*time.Hour))); n != 0 {
		t.Errorf("%d samples in a window after the probe stopped", n)
	}
}

// TestByPlacement checks that the per-placement ratios take only the rounds where the
// target's and nginx's segments both ran wholly near, or wholly far.
func TestByPlacement(t *testing.T) {
	n := &row{Target: tNginx,
		RoundRPS:      []float64{100, 100, 80, 80, 100},
		RoundCPU10k:   []float64{1, 1, 1.2, 1.2, 1},
		RoundFarShare: []float64{0, 0, 1, 1, 0.5},
	}
	x := &row{Target: tTollgate,
		RoundRPS:      []float64{80, 90, 60, 56, 10},
		RoundCPU10k:   []float64{1.3, 1.4, 2.04, 2.16, 9},
		RoundFarShare: []float64{0, 0, 1, 0, 0},
	}
	near, far := byPlacement(x, n, 0), byPlacement(x, n, 1)
	if near == nil || near.Rounds != 2 || near.RPSRatio != 0.85 || near.CPURatio != 1.35 {
		t.Errorf("near: %+v, want 2 rounds, 0.85, 1.35", near)
	}
	if far == nil || far.Rounds != 1 || far.RPSRatio != 0.75 || far.CPURatio != 1.7 {
		t.Errorf("far: %+v, want 1 round, 0.75, 1.7", far)
	}
	x.RoundFarShare = []float64{-1, -1, -1, -1, -1} // no samples
	if s := byPlacement(x, n, 0); s != nil {
		t.Errorf("rounds without samples counted as near: %+v", s)
	}
}
