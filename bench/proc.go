package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process started by the bench in its own process group.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
	log  *os.File
	once sync.Once
}

// startChild starts cmd in a new process group, its output appended to
// logPath. The child is killed if the bench dies (Pdeathsig).
func startChild(name string, cmd *exec.Cmd, logPath string) (*child, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), log: f}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// pid returns the child's process id (its process group id too).
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the child has already exited.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, waits up to grace, then
// sends SIGKILL to the group and waits up to 5 s more. It blocks; calls after
// the first do nothing.
func (c *child) stop(grace time.Duration) { c.once.Do(func() { c.stopOnce(grace) }) }

func (c *child) stopOnce(grace time.Duration) {
	defer c.log.Close()
	pgid := c.pid()
	if !c.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(grace):
		}
	}
	// The group may hold processes that outlive the leader (nginx workers).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
}

// tail returns the last n bytes of the child's log, for error messages.
func (c *child) tail(n int64) string {
	f, err := os.Open(c.log.Name())
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// cleanup is a stack of functions run once, last added first.
type cleanup struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanup) add(f func()) {
	c.mu.Lock()
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *cleanup) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// freeAddr returns 127.0.0.1:port for a port that was free for both TCP and
// UDP a moment ago (memberlist gossips on both).
func freeAddr() (string, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return addr, nil
	}
	return "", errors.New("no free port found in 20 tries")
}

// waitTCP waits until addr accepts a TCP connection, the child dies, or
// timeout passes.
func waitTCP(ctx context.Context, c *child, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c != nil && c.exited() {
			return fmt.Errorf("%s exited: %v: %s", c.name, c.err, c.tail(2000))
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: nothing listening on %s after %v", c.name, addr, timeout)
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux architecture Go supports in practice.
const clockTicks = 100

// procStat is the part of /proc/PID/stat the bench reads.
type procStat struct {
	ppid   int
	utime  uint64 // ticks
	stime  uint64
	cutime uint64 // children already waited for
	cstime uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	n := func(k int) uint64 { v, _ := strconv.ParseUint(f[k-3], 10, 64); return v }
	ppid, _ := strconv.Atoi(f[1])
	return procStat{ppid: ppid, utime: n(14), stime: n(15), cutime: n(16), cstime: n(17)}, nil
}

// cpuTimes are CPU seconds, in all and in the kernel.
type cpuTimes struct{ total, sys float64 }

func (a cpuTimes) sub(b cpuTimes) cpuTimes { return cpuTimes{a.total - b.total, a.sys - b.sys} }

// treeCPU returns the CPU seconds (user + system) used so far by the
// processes rooted at roots and all their live descendants, plus the children
// they have reaped.
func treeCPU(roots ...int) cpuTimes {
	want := map[int]bool{}
	for _, r := range roots {
		if r > 0 {
			want[r] = true
		}
	}
	if len(want) == 0 {
		return cpuTimes{}
	}
	stats := map[int]procStat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			stats[pid] = st
		}
	}
	// Close the set over the parent relation (trees are shallow; bounded).
	for range 16 {
		grew := false
		for pid, st := range stats {
			if !want[pid] && want[st.ppid] {
				want[pid] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	var ticks, sys uint64
	for pid := range want {
		st := stats[pid]
		ticks += st.utime + st.stime + st.cutime + st.cstime
		sys += st.stime + st.cstime
	}
	return cpuTimes{float64(ticks) / clockTicks, float64(sys) / clockTicks}
}

// selfCPU returns the CPU seconds the bench process itself has used, without its
// children (the targets, the backend).
func selfCPU() cpuTimes {
	st, err := readStat(os.Getpid())
	if err != nil {
		return cpuTimes{}
	}
	return cpuTimes{float64(st.utime+st.stime) / clockTicks, float64(st.stime) / clockTicks}
}

// repoRoot finds the directory holding this module's go.mod, walking up from
// the working directory; "" when there is none.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for range 32 {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/tollgate/tollgate")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
	return ""
}
