package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// children returns the pids of the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		c, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, c)
		}
	}
	return out
}

// running says whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func waitGone(t *testing.T, pids []int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, pid := range pids {
		for running(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: worker %d still running after %v", what, pid, d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestE2EWorkers runs `tollgate node --workers 2` for real: the quickstart is served by
// two worker processes; killed with SIGKILL, the node takes its workers with it and
// comes back with every committed change; SIGTERM drains it and its workers.
func TestE2EWorkers(t *testing.T) {
	p := newNodeProc(t)
	p.extra = []string{"--workers", "2"}
	p.start()
	workers := children(p.cmd.Process.Pid)
	if len(workers) != 2 {
		t.Fatalf("the node runs %d child processes, want 2 workers", len(workers))
	}
	quickstart, err := filepath.Abs(filepath.Join("..", "..", "examples", "quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p.mustCLI("apply", "-f", quickstart)
	for i := range 10 {
		if st, _, body := p.call("GET", "demo.localhost", "/hello", nil); st != 200 || !strings.Contains(body, `"hello":"world"`) {
			t.Fatalf("call %d: %d %s", i, st, body)
		}
	}

	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	waitGone(t, workers, 10*time.Second, "after the node was killed")
	p.start()
	workers = children(p.cmd.Process.Pid)
	if len(workers) != 2 {
		t.Fatalf("after the restart the node runs %d child processes, want 2 workers", len(workers))
	}
	if st, _, body := p.call("GET", "demo.localhost", "/hello", nil); st != 200 || !strings.Contains(body, `"hello":"world"`) {
		t.Fatalf("after the restart: %d %s", st, body)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("node did not stop within 30 s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("node exited %d after SIGTERM; log:\n%s", code, p.log)
	}
	waitGone(t, workers, 5*time.Second, "after SIGTERM")
}
