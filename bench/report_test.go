package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

// TestCompareMarkdown checks the second build's table: ratios of tollgate-b to
// tollgate round by round, over all rounds and per placement.
func TestCompareMarkdown(t *testing.T) {
	r := &report{Scenarios: []scenarioInfo{{Name: "full"}}, byKey: map[string]*row{}}
	r.byKey["full/"+tTollgate] = &row{Target: tTollgate,
		RoundRPS:      []float64{100, 100, 100},
		RoundCPU10k:   []float64{2, 2, 2},
		RoundFarShare: []float64{0, 0, 1},
	}
	r.byKey["full/"+tTollgateB] = &row{Target: tTollgateB,
		RoundRPS:      []float64{110, 120, 90},
		RoundCPU10k:   []float64{1.8, 1.9, 2.2},
		RoundFarShare: []float64{0, 0, 1},
	}
	var b strings.Builder
	r.compareMarkdown(&b)
	want := "| full | 3 | 1.100 | 0.950 | 2 | 1.150 | 0.925 | 1 | 0.900 | 1.100 |"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, b.String())
	}

	// With -compare-workers the base is the workers target, not the one-process node.
	r.Options.CompareWorkers = true
	r.byKey["full/"+tTollgateWorkers] = r.byKey["full/"+tTollgate]
	delete(r.byKey, "full/"+tTollgate)
	b.Reset()
	r.compareMarkdown(&b)
	if !strings.Contains(b.String(), want) || !strings.Contains(b.String(), "against "+tTollgateWorkers) {
		t.Errorf("-compare-workers table lacks %q against %s:\n%s", want, tTollgateWorkers, b.String())
	}

	delete(r.byKey, "full/"+tTollgateB)
	b.Reset()
	if r.compareMarkdown(&b); b.Len() != 0 {
		t.Errorf("a run without -compare-bin printed:\n%s", b.String())
	}
}

// TestGateVerdict judges made-up runs: the CPU ratio's interval decides between met,
// at the line and not met; req/s and p99 past their lines fail the gate outright.
func TestGateVerdict(t *testing.T) {
	run := func(rps, p99 float64, cpu ...float64) gateResult {
		r := &report{Scenarios: []scenarioInfo{{Name: gateScenario}}, byKey: map[string]*row{}}
		x := &row{Target: tTollgateWorkers, RatioNginx: rps, P99OverNginx: p99, CPURatioNginx: median(cpu), RoundCPURatio: cpu}
		r.byKey[gateScenario+"/"+tTollgateWorkers] = x
		gs := r.gate()
		if len(gs) != 1 {
			t.Fatalf("%d verdicts, want 1", len(gs))
		}
		return gs[0]
	}
	for _, c := range []struct {
		name    string
		g       gateResult
		verdict string
	}{
		{"well under", run(0.92, 0.1, 1.30, 1.32, 1.31, 1.33, 1.29, 1.30), "met"},
		{"noisy, spans the line", run(0.92, 0.1, 1.30, 1.45, 1.33, 1.41, 1.29, 1.38), "at the line"},
		{"well over", run(0.85, 0.3, 1.50, 1.52, 1.49, 1.55, 1.51, 1.50), "not met"},
		{"too slow", run(0.70, 0.1, 1.30, 1.30, 1.30), "not met"},
		{"p99 too far", run(0.90, 1.5, 1.30, 1.30, 1.30), "not met"},
		{"one round", run(0.90, 0.1, 1.30), "at the line"},
		{"refused calls", func() gateResult {
			// Well under, but refusals cost less than served calls: not a measure of the gate.
			r := &report{Scenarios: []scenarioInfo{{Name: gateScenario}}, byKey: map[string]*row{}}
			r.byKey[gateScenario+"/"+tTollgateWorkers] = &row{Target: tTollgateWorkers, RatioNginx: 0.96, P99OverNginx: 0.1,
				CPURatioNginx: 1.1, RoundCPURatio: []float64{1.1, 1.1, 1.1}, Requests: 1000, BadStatus: 3}
			return r.gate()[0]
		}(), "no verdict"},
	} {
		if c.g.Verdict != c.verdict {
			t.Errorf("%s: %q (%s; interval %.3f–%.3f), want %q", c.name, c.g.Verdict, c.g.Why, c.g.CPULow, c.g.CPUHigh, c.verdict)
		}
	}
	// The interval: mean 1.30, sample deviation 0.02 over 4 rounds, t(3) = 2.353.
	mean, lo, hi := meanInterval90([]float64{1.28, 1.30, 1.32, 1.30})
	if half := 2.353 * math.Sqrt(0.0008/3) / 2; mean != 1.3 || math.Abs(lo-(1.3-half)) > 1e-3 || math.Abs(hi-(1.3+half)) > 1e-3 {
		t.Errorf("interval of 1.28, 1.30, 1.32, 1.30: %v %v–%v, want 1.3 ± %.4f", mean, lo, hi, half)
	}
}

// TestNonceCapacityFor: the gate command keeps the node's default nonce table; a run
// that signs more calls than it holds gets one that does.
func TestNonceCapacityFor(t *testing.T) {
	gate := options{Rounds: 6, Duration: 4 * time.Second, Warmup: time.Second}
	if n := nonceCapacityFor(gate, selectScenarios("anon-64B,app-sign,full"), 2); n != 0 {
		t.Errorf("gate command on 2 CPUs: --nonce-capacity %d, want the default", n)
	}
	long := options{Rounds: 30, Duration: 4 * time.Second, Warmup: time.Second}
	if n := nonceCapacityFor(long, selectScenarios("full"), 2); n < 30*5*50_000 {
		t.Errorf("30 rounds of full on 2 CPUs: --nonce-capacity %d, want room for 50,000 signed calls a second", n)
	}
	if n := nonceCapacityFor(long, selectScenarios("anon-64B"), 2); n != 0 {
		t.Errorf("30 rounds unsigned: --nonce-capacity %d, want the default", n)
	}
}
