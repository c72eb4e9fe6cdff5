package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the backend and bare proxy children
// the harness re-executes.
func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	os.Exit(m.Run())
}

// TestQuickRun runs the harness end to end against direct and the bare
// proxy for a few hundred milliseconds and checks what it wrote.
func TestQuickRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := t.TempDir()
	rep, err := run(ctx, options{
		Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Rounds: 1, Conns: 4,
		Scenarios: "anon-64B,routes-10k", Targets: tDirect + "," + tBareProxy, out: out,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4:\n%s", len(rep.Rows), rep.markdown())
	}
	for _, x := range rep.Rows {
		if x.Skipped != "" || x.Requests == 0 || x.P99 <= 0 {
			t.Errorf("%s/%s: %d requests, p99 %v, skipped %q", x.Scenario, x.Target, x.Requests, x.P99, x.Skipped)
		}
		if bad := x.Errors + x.BadStatus + x.BadBody; bad > 0 {
			t.Errorf("%s/%s: %d bad answers", x.Scenario, x.Target, bad)
		}
		if x.Target == tBareProxy && (x.RatioDirect <= 0 || x.CPUPer10k <= 0) {
			t.Errorf("bareproxy: ratio to direct %v, CPU/10k %v", x.RatioDirect, x.CPUPer10k)
		}
	}
	var back report
	b, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Rows) != 4 {
		t.Fatalf("latest.json: %v, %d rows", err, len(back.Rows))
	}
	svg, err := os.ReadFile(filepath.Join(out, "latest.svg"))
	if err != nil || !strings.Contains(string(svg), "<rect") {
		t.Fatalf("latest.svg: %v", err)
	}
	if md := rep.markdown(); !strings.Contains(md, "| anon-64B | bareproxy |") {
		t.Fatalf("table lacks the bare proxy row:\n%s", md)
	}
}

// TestScenarioConfigs checks that every scenario writes a file and builds a
// request for the group's host.
func TestScenarioConfigs(t *testing.T) {
	e := &env{backend: "127.0.0.1:1", host: "bench.localhost", appKey: "k", appSecret: "s"}
	for _, sc := range scenarios {
		var y strings.Builder
		sc.config(e, &y)
		if !strings.HasPrefix(y.String(), "groups:\n") {
			t.Errorf("%s: file starts %q", sc.name, y.String()[:min(20, y.Len())])
		}
	}
}
