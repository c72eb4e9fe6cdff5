package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/tollgate/tollgate/ratelimit"
)

// report is everything a run measured; it is written as JSON.
type report struct {
	Started   time.Time       `json:"started"`
	Finished  time.Time       `json:"finished"`
	Command   string          `json:"command"`
	Commit    string          `json:"commit,omitempty"`
	Host      hostInfo        `json:"host"`
	Options   options         `json:"options"`
	Scenarios []scenarioInfo  `json:"scenarios"`
	Rows      []*row          `json:"rows"`
	Notes     []string        `json:"notes,omitempty"`
	Profiles  []string        `json:"profiles,omitempty"`
	Gate      []gateResult    `json:"gate,omitempty"`
	files     string          // where the results went, for the user
	out       string          // results directory, once known
	byKey     map[string]*row // scenario/target → row
	stamp     string
}

type hostInfo struct {
	CPUs      int    `json:"cpus"`
	CPU       string `json:"cpu"`
	Go        string `json:"go"`
	OS        string `json:"os"`
	Nginx     string `json:"nginx,omitempty"`
	LoadGen   string `json:"loadgen"`
	LoadAvg   string `json:"loadavgAtStart,omitempty"` // /proc/loadavg: others' load skews figures
	Kernel    string `json:"kernel,omitempty"`
	GoMaxProc int    `json:"gomaxprocs"`
}

type scenarioInfo struct {
	Name string `json:"name"`
	Desc string `json:"desc"`
}

// row is one scenario × target, summed over the rounds. Latencies are in
// milliseconds, CPU in seconds.
type row struct {
	Scenario      string    `json:"scenario"`
	Target        string    `json:"target"`
	Skipped       string    `json:"skipped,omitempty"`
	Requests      int64     `json:"requests"`
	Seconds       float64   `json:"seconds"`
	RPS           float64   `json:"rps"`
	RoundRPS      []float64 `json:"roundRps"`
	Spread        float64   `json:"spreadPct"` // (max − min) / mean of RoundRPS, %
	P50           float64   `json:"p50ms"`
	P99           float64   `json:"p99ms"`
	P999          float64   `json:"p999ms"`
	Max           float64   `json:"maxms"`
	RatioDirect   float64   `json:"ratioToDirect,omitempty"`
	RatioNginx    float64   `json:"ratioToNginx,omitempty"`
	P99OverNginx  float64   `json:"p99OverNginxMs,omitempty"`
	CPUSeconds    float64   `json:"cpuSeconds"`
	CPUPer10k     float64   `json:"cpuSecondsPer10k"`
	CPURatioNginx float64   `json:"cpuRatioToNginx,omitempty"`
	// RoundCPU10k is CPUPer10k round by round; RoundCPURatio the ratio to nginx's in
	// the same round, and CPURatioMedian their median: a round's targets run back to
	// back, so a slow spell of the machine that spans a round cancels out of its ratio
	// where it does not out of the whole run's.
	RoundCPU10k    []float64 `json:"roundCpuSecondsPer10k"`
	RoundCPURatio  []float64 `json:"roundCpuRatioToNginx,omitempty"`
	CPURatioMedian float64   `json:"cpuRatioToNginxMedianOfRounds,omitempty"`
	BackendCPU10k  float64   `json:"backendCpuSecondsPer10k"`
	// LoadgenCPU10k is the bench's own CPU per 10k requests (it shares the cores with
	// the target), and RoundLoadgenCPU10k the same round by round.
	LoadgenCPU10k      float64   `json:"loadgenCpuSecondsPer10k"`
	RoundLoadgenCPU10k []float64 `json:"roundLoadgenCpuSecondsPer10k"`
	// RoundCrossCPUNs is, round by round, the median cross-CPU round trip sampled
	// while the segment ran (0: no sample), and RoundFarShare the share of those
	// samples at or above farNs (-1: no sample): where the host had put the vCPUs
	// (see crossCPUProbe). The ratios to nginx are then taken over the rounds where
	// both segments ran near (every sample below farNs) and where both ran far.
	RoundCrossCPUNs []float64         `json:"roundCrossCpuNs,omitempty"`
	RoundFarShare   []float64         `json:"roundFarShare,omitempty"`
	Near            *placementSummary `json:"nearPlacement,omitempty"`
	Far             *placementSummary `json:"farPlacement,omitempty"`
	// KernelShare is the percentage of the target's CPU spent in the kernel.
	KernelShare    float64 `json:"kernelSharePercent"`
	Errors         int64   `json:"transportErrors"`
	BadStatus      int64   `json:"non200"`
	BadBody        int64   `json:"badBody"`
	hist           *hdrhistogram.Histogram
	backendCPUSecs float64
	loadgenCPUSecs float64
	sysSeconds     float64
}

// placementSummary is a row's ratios to nginx over the rounds of one placement:
// medians of the round-by-round ratios.
type placementSummary struct {
	Rounds   int     `json:"rounds"`
	RPSRatio float64 `json:"ratioToNginx"`
	CPURatio float64 `json:"cpuRatioToNginx"`
}

// cells renders s as three table cells (rounds, req/s ratio, CPU ratio) with the
// ratios to digits places; nil is no round.
func (s *placementSummary) cells(digits int) string {
	if s == nil {
		return "0 | – | –"
	}
	return fmt.Sprintf("%d | %.*f | %.*f", s.Rounds, digits, s.RPSRatio, digits, s.CPURatio)
}

func newReport(o options, scs []scenario) *report {
	r := &report{
		Started: time.Now(), Options: o, byKey: map[string]*row{},
		Command: strings.TrimSpace("go run ./bench " + strings.Join(os.Args[1:], " ")),
		Host: hostInfo{
			CPUs: runtime.NumCPU(), CPU: cpuModel(), Go: runtime.Version(),
			OS: runtime.GOOS + "/" + runtime.GOARCH, GoMaxProc: runtime.GOMAXPROCS(0),
			LoadGen: fmt.Sprintf("closed loop, %d connections × 1 outstanding request, in-process", o.Conns),
		},
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.Host.LoadAvg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		r.Host.Kernel = strings.TrimSpace(string(b))
	}
	if root := repoRoot(); root != "" {
		if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
			r.Commit = strings.TrimSpace(string(out))
		}
	}
	r.Host.Nginx = nginxVersion()
	r.stamp = r.Started.UTC().Format("20060102-150405")
	for _, s := range scs {
		r.Scenarios = append(r.Scenarios, scenarioInfo{s.name, s.desc})
	}
	return r
}

func (r *report) row(sc, t string) *row {
	k := sc + "/" + t
	if x := r.byKey[k]; x != nil {
		return x
	}
	x := &row{Scenario: sc, Target: t, hist: newHist()}
	r.byKey[k] = x
	r.Rows = append(r.Rows, x)
	return x
}

func (r *report) skip(sc, t, why string) { r.row(sc, t).Skipped = why }

// add folds one segment into its row.
func (r *report) add(sc, t string, res loadResult, seg segmentCPU) {
	cpu := seg.target
	x := r.row(sc, t)
	x.Requests += res.Requests
	x.Seconds += res.Seconds
	if res.Seconds > 0 {
		x.RoundRPS = append(x.RoundRPS, round(float64(res.Requests)/res.Seconds, 0))
	}
	if res.Requests > 0 {
		x.RoundCPU10k = append(x.RoundCPU10k, round(cpu.total/float64(res.Requests)*1e4, 4))
		x.RoundLoadgenCPU10k = append(x.RoundLoadgenCPU10k, round(seg.loadgen.total/float64(res.Requests)*1e4, 4))
		ns, far := 0.0, -1.0
		if len(seg.crossCPU) > 0 {
			ns, far = median(seg.crossCPU), 0
			for _, v := range seg.crossCPU {
				if v >= farNs {
					far++
				}
			}
			far = round(far/float64(len(seg.crossCPU)), 2)
		}
		x.RoundCrossCPUNs = append(x.RoundCrossCPUNs, round(ns, 0))
		x.RoundFarShare = append(x.RoundFarShare, far)
	}
	x.Errors += res.Errors
	x.BadStatus += res.BadCode
	x.BadBody += res.BadBody
	x.CPUSeconds += cpu.total
	x.sysSeconds += cpu.sys
	x.backendCPUSecs += seg.backend.total
	x.loadgenCPUSecs += seg.loadgen.total
	if res.hist != nil {
		x.hist.Merge(res.hist)
	}
}

// finish computes rates, percentiles and ratios, and sorts the rows into
// scenario and target order.
func (r *report) finish() {
	r.Finished = time.Now()
	for _, x := range r.Rows {
		if x.Seconds > 0 {
			x.RPS = round(float64(x.Requests)/x.Seconds, 0)
		}
		if x.hist.TotalCount() > 0 {
			x.P50 = ms(x.hist.ValueAtQuantile(50))
			x.P99 = ms(x.hist.ValueAtQuantile(99))
			x.P999 = ms(x.hist.ValueAtQuantile(99.9))
			x.Max = ms(x.hist.Max())
		}
		if x.Requests > 0 {
			x.CPUPer10k = round(x.CPUSeconds/float64(x.Requests)*1e4, 4)
			x.BackendCPU10k = round(x.backendCPUSecs/float64(x.Requests)*1e4, 4)
			x.LoadgenCPU10k = round(x.loadgenCPUSecs/float64(x.Requests)*1e4, 4)
		}
		if x.CPUSeconds > 0 {
			x.KernelShare = round(x.sysSeconds/x.CPUSeconds*100, 1)
		}
		x.CPUSeconds = round(x.CPUSeconds, 2)
		if len(x.RoundRPS) > 1 && x.RPS > 0 {
			lo, hi := x.RoundRPS[0], x.RoundRPS[0]
			for _, v := range x.RoundRPS {
				lo, hi = min(lo, v), max(hi, v)
			}
			x.Spread = round((hi-lo)/x.RPS*100, 1)
		}
	}
	for _, x := range r.Rows {
		if d := r.byKey[x.Scenario+"/"+tDirect]; d != nil && d.RPS > 0 && x.RPS > 0 {
			x.RatioDirect = round(x.RPS/d.RPS, 3)
		}
		if n := r.byKey[x.Scenario+"/"+tNginx]; n != nil && n.RPS > 0 && x.RPS > 0 {
			x.RatioNginx = round(x.RPS/n.RPS, 3)
			x.P99OverNginx = round(x.P99-n.P99, 3)
			if n.CPUPer10k > 0 {
				x.CPURatioNginx = round(x.CPUPer10k/n.CPUPer10k, 3)
			}
			if len(x.RoundCPU10k) == len(n.RoundCPU10k) {
				x.RoundCPURatio = nil
				for i, c := range x.RoundCPU10k {
					if n.RoundCPU10k[i] > 0 {
						x.RoundCPURatio = append(x.RoundCPURatio, round(c/n.RoundCPU10k[i], 3))
					}
				}
				x.CPURatioMedian = median(x.RoundCPURatio)
				if x != n {
					x.Near, x.Far = byPlacement(x, n, 0), byPlacement(x, n, 1)
				}
			}
		}
	}
	var sorted []*row
	for _, s := range r.Scenarios {
		for _, t := range allTargets {
			if x := r.byKey[s.Name+"/"+t]; x != nil {
				sorted = append(sorted, x)
			}
		}
	}
	r.Rows = sorted
	r.Gate = r.gate()
}

// byPlacement summarizes the rounds where x's and nginx's segments both had every
// cross-CPU sample on the same side of farNs (share 0: near, 1: far), or returns nil.
func byPlacement(x, n *row, share float64) *placementSummary {
	if len(x.RoundFarShare) != len(x.RoundCPU10k) || len(n.RoundFarShare) != len(x.RoundFarShare) {
		return nil
	}
	return ratiosOver(x, n, func(i int) bool { return x.RoundFarShare[i] == share && n.RoundFarShare[i] == share })
}

// ratiosOver summarizes x against base over the rounds keep accepts: the medians of
// their round-by-round ratios, or nil when no round is left.
func ratiosOver(x, base *row, keep func(round int) bool) *placementSummary {
	if len(x.RoundRPS) != len(x.RoundCPU10k) || len(base.RoundRPS) != len(x.RoundRPS) || len(base.RoundCPU10k) != len(x.RoundCPU10k) {
		return nil
	}
	var rps, cpu []float64
	for i := range x.RoundCPU10k {
		if keep(i) && base.RoundCPU10k[i] > 0 && base.RoundRPS[i] > 0 {
			rps = append(rps, x.RoundRPS[i]/base.RoundRPS[i])
			cpu = append(cpu, x.RoundCPU10k[i]/base.RoundCPU10k[i])
		}
	}
	if len(cpu) == 0 {
		return nil
	}
	return &placementSummary{Rounds: len(cpu), RPSRatio: round(median(rps), 3), CPURatio: round(median(cpu), 3)}
}

// markdown renders the table and the notes.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n`%s` — %s, %d CPUs, %s, %s; %d conns, %d rounds × %v per target (+%v warm-up); load average at start %s\n\n",
		r.Command, r.Host.CPU, r.Host.CPUs, r.Host.Go, orDash(r.Host.Nginx), r.Options.Conns, r.Options.Rounds,
		r.Options.Duration, r.Options.Warmup, r.Host.LoadAvg)
	if n := r.Options.NonceCapacity; n > 0 {
		fmt.Fprintf(&b, "Tollgate nodes ran with `--nonce-capacity %d` (the node's default is %d: a run that signs more calls than its node keeps would measure refusals).\n\n", n, ratelimit.DefaultMaxNonces)
	}
	b.WriteString("| scenario | target | req/s | ± rounds | p50 ms | p99 ms | p99.9 ms | ×direct | ×nginx | p99 − nginx ms | CPU s/10k req | CPU ×nginx | CPU ×nginx, median of rounds | kernel % | errors |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Rows {
		if x.Skipped != "" || x.Requests == 0 {
			why := x.Skipped
			if why == "" {
				why = "no answers"
			}
			fmt.Fprintf(&b, "| %s | %s | skipped: %s | | | | | | | | | | | | |\n", x.Scenario, x.Target, mdEscape(why))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %.2f | %.2f | %.2f | %s | %s | %s | %.3f | %s | %s | %.0f | %d |\n",
			x.Scenario, x.Target, x.RPS, spread(x), x.P50, x.P99, x.P999,
			ratio(x.RatioDirect), ratio(x.RatioNginx), signed(x.P99OverNginx, x.RatioNginx > 0),
			x.CPUPer10k, ratio(x.CPURatioNginx), ratio(x.CPURatioMedian), x.KernelShare, x.Errors+x.BadStatus+x.BadBody)
	}
	r.gateMarkdown(&b)
	r.placementMarkdown(&b)
	r.compareMarkdown(&b)
	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// placementMarkdown renders the ratios to nginx by where the host had put the vCPUs,
// when the probe ran and some round was wholly near or wholly far.
func (r *report) placementMarkdown(b *strings.Builder) {
	var rows []*row
	for _, x := range r.Rows {
		if x.Near != nil || x.Far != nil {
			rows = append(rows, x)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "\nBy placement: a cache line's round trip between the first two CPUs, sampled during each segment, below %d ns is near, at or above far (on a VM it changes as the host moves the vCPUs); medians of the rounds where a target and nginx both ran wholly near or wholly far:\n\n", farNs)
	b.WriteString("| scenario | target | near rounds | ×nginx near | CPU ×nginx near | far rounds | ×nginx far | CPU ×nginx far |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range rows {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", x.Scenario, x.Target, x.Near.cells(2), x.Far.cells(2))
	}
}

// compareMarkdown renders the second build (-compare-bin) against the first, where
// both ran: the medians of their round-by-round ratios, over all rounds and per
// placement.
func (r *report) compareMarkdown(b *strings.Builder) {
	header := false
	base := tTollgate
	if r.Options.CompareWorkers {
		base = tTollgateWorkers
	}
	for _, sc := range r.Scenarios {
		a, x := r.byKey[sc.Name+"/"+base], r.byKey[sc.Name+"/"+tTollgateB]
		if a == nil || x == nil {
			continue
		}
		all := ratiosOver(x, a, func(int) bool { return true })
		if all == nil {
			continue
		}
		if !header {
			fmt.Fprintf(b, "\n%s (-compare-bin) against %s, medians of the round-by-round ratios:\n\n", tTollgateB, base)
			b.WriteString("| scenario | all rounds | req/s × | CPU × | near rounds | req/s × near | CPU × near | far rounds | req/s × far | CPU × far |\n")
			b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
			header = true
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", sc.Name, all.cells(3), byPlacement(x, a, 0).cells(3), byPlacement(x, a, 1).cells(3))
	}
}

// write stores <stamp>.json, latest.json, latest.md and latest.svg in dir.
func (r *report) write(dir string) error {
	r.out = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	stamped := filepath.Join(dir, r.stamp+".json")
	for name, data := range map[string][]byte{
		stamped:                           js,
		filepath.Join(dir, "latest.json"): js,
		filepath.Join(dir, "latest.md"):   []byte(r.markdown()),
		filepath.Join(dir, "latest.svg"):  []byte(r.svg()),
	} {
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return err
		}
	}
	r.files = "results: " + stamped + ", latest.{json,md,svg}"
	return nil
}

// profileDir is where -profile writes its files.
func (r *report) profileDir() string {
	return filepath.Join(r.out, "profile-"+r.stamp)
}

// ms converts a histogram value (µs) to milliseconds.
func ms(us int64) float64 { return round(float64(us)/1000, 3) }

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	if v < 0 {
		return -float64(int64(-v*p+0.5)) / p
	}
	return float64(int64(v*p+0.5)) / p
}

func ratio(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func signed(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return fmt.Sprintf("%+.2f", v)
}

func spread(x *row) string {
	if len(x.RoundRPS) < 2 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", x.Spread)
}

func orDash(s string) string {
	if s == "" {
		return "no nginx"
	}
	return s
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// median returns the median of v (the mean of the middle two for an even count), or 0.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return round((s[m-1]+s[m])/2, 3)
}
