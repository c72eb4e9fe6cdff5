package main

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// crossCPUProbe samples, every crossCPUEvery, how long one cache line takes to go
// from one CPU to another and back, between two threads pinned one to each of the
// first two CPUs the bench may use.
//
// On a VM that round trip is not a constant: the host may put the two vCPUs on cores
// that share a last-level cache (on this 2-vCPU EPYC VM, about 80–110 ns) or not
// (about 400 ns), and moves them within seconds. A Go server, whose goroutines and
// the state they carry change CPUs from one request to the next, pays for the far
// placement much more than nginx, whose worker keeps a connection on one CPU: the
// README's "Where the host puts the vCPUs" has the figures. So every measured
// segment is tagged with the samples taken during it, and the report gives the
// ratios to nginx for each placement apart.
//
// A sample is a few hundred microseconds of spinning on both CPUs, four times a
// second: well under 1% of the machine, the same for every target.
type crossCPUProbe struct {
	mu      sync.Mutex
	samples []crossCPUSample

	start   chan int // to the pong thread: round trips to answer; 0 ends it
	ended   chan struct{}
	line    paddedInt64
	stop    chan struct{}
	done    chan struct{}
	pinned  chan error
	proceed chan bool // both threads pinned: sample, or return
}

type crossCPUSample struct {
	at time.Time
	ns float64 // round trip
}

type paddedInt64 struct {
	_ [64]byte
	v atomic.Int64
	_ [64]byte
}

const (
	crossCPUEvery = 250 * time.Millisecond
	// crossCPUChunk round trips are timed together; a sample is the median of
	// crossCPUChunks chunks, so a thread the kernel preempts for a moment (the
	// machine is saturated while the bench runs) spoils one chunk, not the sample.
	crossCPUChunk  = 200
	crossCPUChunks = 9
	// crossCPUWait bounds a sample: one that takes longer (the kernel ran something
	// else on a CPU for a while) is dropped, and stopping never waits longer.
	crossCPUWait = 50 * time.Millisecond
	// farNs separates the two placements: between this VM's 80–110 ns and ~400 ns.
	farNs = 200
)

// startCrossCPUProbe starts the sampler, or returns nil when the bench may use
// fewer than two CPUs or cannot pin threads.
func startCrossCPUProbe() *crossCPUProbe {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var cpus []int
	for c := 0; c < 1024 && len(cpus) < 2; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 || runtime.GOMAXPROCS(0) < 2 {
		return nil
	}
	p := &crossCPUProbe{
		start: make(chan int), ended: make(chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}),
		pinned: make(chan error, 2), proceed: make(chan bool, 2),
	}
	go p.pong(cpus[1])
	go p.ping(cpus[0])
	ok := true
	for range 2 {
		if err := <-p.pinned; err != nil {
			ok = false
		}
	}
	p.proceed <- ok
	p.proceed <- ok
	if !ok {
		<-p.done
		return nil
	}
	return p
}

// pin locks the calling goroutine to its thread and the thread to cpu. The
// goroutines never unlock: when they return, the runtime ends their threads, so no
// pinned thread goes back to its pool.
func pin(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	return unix.SchedSetaffinity(0, &set)
}

func (p *crossCPUProbe) pong(cpu int) {
	p.pinned <- pin(cpu)
	if !<-p.proceed {
		return
	}
	for n := range p.start {
		if n == 0 {
			return
		}
		deadline := time.Now().Add(crossCPUWait)
		for i := int64(0); i < int64(n); i++ {
			if !spinUntil(&p.line.v, 2*i+1, deadline) {
				break
			}
			p.line.v.Store(2*i + 2)
		}
		p.ended <- struct{}{}
	}
}

func (p *crossCPUProbe) ping(cpu int) {
	defer close(p.done)
	p.pinned <- pin(cpu)
	if !<-p.proceed {
		return
	}
	t := time.NewTicker(crossCPUEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			p.start <- 0
			return
		case <-t.C:
		}
		if ns, ok := p.sample(); ok {
			p.mu.Lock()
			p.samples = append(p.samples, crossCPUSample{time.Now(), ns})
			p.mu.Unlock()
		}
	}
}

// sample times crossCPUChunks+1 chunks of round trips (the first, which includes
// waking the partner, is not counted) and returns the median chunk's round trip.
func (p *crossCPUProbe) sample() (ns float64, ok bool) {
	const n = (crossCPUChunks + 1) * crossCPUChunk
	var marks [crossCPUChunks + 2]time.Time // at round trips 0, crossCPUChunk, …, n
	p.line.v.Store(0)
	p.start <- n
	deadline := time.Now().Add(crossCPUWait)
	ok = true
	for i := int64(0); i < n; i++ {
		if i%crossCPUChunk == 0 {
			marks[i/crossCPUChunk] = time.Now()
		}
		p.line.v.Store(2*i + 1)
		if !spinUntil(&p.line.v, 2*i+2, deadline) {
			ok = false
			p.line.v.Store(-1) // the partner gives up too
			break
		}
	}
	marks[len(marks)-1] = time.Now()
	<-p.ended
	if !ok {
		return 0, false
	}
	var chunks [crossCPUChunks]float64
	for k := range chunks {
		chunks[k] = float64(marks[k+2].Sub(marks[k+1]).Nanoseconds()) / crossCPUChunk
	}
	s := slices.Sorted(slices.Values(chunks[:]))
	return s[len(s)/2], true
}

// spinUntil waits for v to hold want until deadline; -1 gives up.
func spinUntil(v *atomic.Int64, want int64, deadline time.Time) bool {
	for spins := 1; ; spins++ {
		switch v.Load() {
		case want:
			return true
		case -1:
			return false
		}
		if spins%4096 == 0 && time.Now().After(deadline) {
			return false
		}
	}
}

// between returns the samples taken in [from, to].
func (p *crossCPUProbe) between(from, to time.Time) []float64 {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []float64
	for _, s := range p.samples {
		if !s.at.Before(from) && !s.at.After(to) {
			out = append(out, s.ns)
		}
	}
	return out
}

func (p *crossCPUProbe) close() {
	if p == nil {
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}
