package main

import (
	"fmt"
	"math"
	"strings"
)

// Issue 7's gate, as the bench checks it: the full pipeline against nginx's bare
// proxy_pass in the same run.
const (
	gateScenario = "full"
	gateMinRPS   = 0.75 // requests per second, × nginx's
	gateMaxCPU   = 1.4  // CPU per request, × nginx's
	gateMaxP99ms = 1.0  // p99 above nginx's, ms
)

// gateResult is the gate's verdict for one Tollgate target. The CPU ratio is the one
// that decides it on this machine, and it moves by a few percent from run to run, so
// the verdict rests on an interval rather than on the one figure: the 90% t-interval
// of the mean of the round-by-round ratios (a round runs every target once, so each
// round gives one paired sample).
type gateResult struct {
	Target   string  `json:"target"`
	RPSRatio float64 `json:"ratioToNginx"`
	P99Over  float64 `json:"p99OverNginxMs"`
	CPURatio float64 `json:"cpuRatioToNginx"`
	CPUMean  float64 `json:"cpuRatioMeanOfRounds"`
	CPULow   float64 `json:"cpuRatioLow90"`
	CPUHigh  float64 `json:"cpuRatioHigh90"`
	Rounds   int     `json:"rounds"`
	Failed   int64   `json:"failedCalls,omitempty"` // transport errors, non-200s, wrong bodies
	Calls    int64   `json:"calls"`
	Verdict  string  `json:"verdict"`       // met, not met, at the line, no verdict
	Why      string  `json:"why,omitempty"` // what decided a verdict other than met
}

// gate judges the gate scenario's Tollgate targets, the default node's first.
func (r *report) gate() []gateResult {
	var out []gateResult
	for _, t := range []string{tTollgateWorkers, tTollgate} {
		x := r.byKey[gateScenario+"/"+t]
		if x == nil || x.RatioNginx == 0 || x.CPURatioNginx == 0 {
			continue
		}
		g := gateResult{Target: t, RPSRatio: x.RatioNginx, P99Over: x.P99OverNginx, CPURatio: x.CPURatioNginx,
			Rounds: len(x.RoundCPURatio), Failed: x.Errors + x.BadStatus + x.BadBody, Calls: x.Requests}
		g.CPUMean, g.CPULow, g.CPUHigh = meanInterval90(x.RoundCPURatio)
		g.Verdict, g.Why = gateVerdict(g)
		out = append(out, g)
	}
	return out
}

// gateVerdict: no verdict when calls failed, not met when a figure is past its line
// (the CPU ratio's whole interval above it), met when every figure is within (the CPU
// ratio's whole interval below), at the line otherwise: the run cannot tell.
//
// A failed call is an answer that cost less than a served one (a refusal) or a call
// that never counted: a run with any measures something other than the gate. A 30-round
// run of `full` filled the node's nonce table, and its last rounds, refused with
// A400NU, read 0.81x nginx's CPU per request: "met" for the wrong reason.
func gateVerdict(g gateResult) (verdict, why string) {
	switch {
	case g.Failed > 0:
		return "no verdict", fmt.Sprintf("%d of %d calls failed (non-200, wrong body or transport error)", g.Failed, g.Calls)
	case g.RPSRatio < gateMinRPS:
		return "not met", fmt.Sprintf("req/s %.3f× < %.2f×", g.RPSRatio, gateMinRPS)
	case g.P99Over > gateMaxP99ms:
		return "not met", fmt.Sprintf("p99 +%.2f ms > +%.0f ms", g.P99Over, gateMaxP99ms)
	case g.Rounds < 2:
		if g.CPURatio <= gateMaxCPU {
			return "at the line", "one round: no interval"
		}
		return "not met", fmt.Sprintf("CPU %.3f× > %.1f× (one round)", g.CPURatio, gateMaxCPU)
	case g.CPULow > gateMaxCPU:
		return "not met", fmt.Sprintf("CPU interval above %.1f×", gateMaxCPU)
	case g.CPUHigh > gateMaxCPU:
		return "at the line", fmt.Sprintf("CPU interval spans %.1f×", gateMaxCPU)
	}
	return "met", ""
}

// meanInterval90 returns the mean of v and its two-sided 90% Student t-interval.
func meanInterval90(v []float64) (mean, lo, hi float64) {
	n := len(v)
	if n == 0 {
		return 0, 0, 0
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(n)
	if n < 2 {
		mean = round(mean, 3)
		return mean, mean, mean
	}
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	half := t90(n-1) * math.Sqrt(ss/float64(n-1)) / math.Sqrt(float64(n))
	return round(mean, 3), round(mean-half, 3), round(mean+half, 3)
}

// t90 is Student's t for a two-sided 90% interval with df degrees of freedom.
func t90(df int) float64 {
	table := [...]float64{6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
		1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725}
	if df <= len(table) {
		return table[df-1]
	}
	if df <= 30 {
		return 1.697
	}
	return 1.645
}

// gateMarkdown renders the verdicts under the table.
func (r *report) gateMarkdown(b *strings.Builder) {
	gs := r.Gate
	if len(gs) == 0 {
		return
	}
	fmt.Fprintf(b, "\nGate (issue 7, `%s`): req/s ≥ %.2f× nginx's, CPU per request ≤ %.1f× nginx's, p99 ≤ nginx's + %.0f ms; the CPU ratio is judged on the 90%% interval of its round-by-round mean.\n\n",
		gateScenario, gateMinRPS, gateMaxCPU, gateMaxP99ms)
	b.WriteString("| target | req/s ×nginx | p99 − nginx ms | CPU ×nginx | rounds | CPU ×nginx, mean of rounds | 90% interval | verdict |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---|---|\n")
	for _, g := range gs {
		verdict := "**" + g.Verdict + "**"
		if g.Why != "" {
			verdict += " (" + g.Why + ")"
		}
		fmt.Fprintf(b, "| %s | %.2f | %+.2f | %.2f | %d | %.3f | %.3f–%.3f | %s |\n",
			g.Target, g.RPSRatio, g.P99Over, g.CPURatio, g.Rounds, g.CPUMean, g.CPULow, g.CPUHigh, verdict)
	}
}
