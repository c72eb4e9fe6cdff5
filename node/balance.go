package node

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// connBalance spreads a node's connections evenly over its workers. They accept from
// one listener, and the kernel wakes whichever is waiting: a burst of connections (a
// load generator's, a restarted client pool's) often lands mostly on one worker,
// which then runs out of CPU while the other idles; keep-alive connections keep the
// split for their whole life. So each worker counts its open connections in memory
// the node shares with all of them, and takes a new one only while it holds no more
// than its share.
type connBalance struct {
	mem    []byte
	counts []atomic.Int64 // by worker slot, a cache line each: open connections, then the worker's pid
	self   int
}

// maxWorkers bounds Workers: the balance page has a cache line per worker.
const maxWorkers = 64

const balanceStride = 64 / int(unsafe.Sizeof(atomic.Int64{}))

// newBalanceFile creates the node's balance page, in memory.
func newBalanceFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("tollgate-balance", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("connection balance (memfd): %w", err)
	}
	f := os.NewFile(uintptr(fd), "tollgate-balance")
	if err := f.Truncate(maxWorkers * 64); err != nil {
		f.Close()
		return nil, fmt.Errorf("connection balance: %w", err)
	}
	return f, nil
}

// mapBalance maps the balance page for the worker in slot self (-1: the node).
func mapBalance(f *os.File, self int) (*connBalance, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, maxWorkers*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("connection balance: map: %w", err)
	}
	counts := unsafe.Slice((*atomic.Int64)(unsafe.Pointer(&mem[0])), maxWorkers*balanceStride)
	return &connBalance{mem: mem, counts: counts, self: self}, nil
}

func (b *connBalance) count(slot int) *atomic.Int64 { return &b.counts[slot*balanceStride] }

// pid is the process serving slot, 0 while none does. The node sets it; workers read
// it to tell a sibling that died from one that lives (meshTransport.MemberNames).
func (b *connBalance) pid(slot int) *atomic.Int64 { return &b.counts[slot*balanceStride+1] }

// reset empties a slot whose worker is gone: its connections went with it.
func (b *connBalance) reset(slot int) {
	b.pid(slot).Store(0)
	b.count(slot).Store(0)
}

// connState is the worker's fasthttp ConnState hook: it counts open connections.
func (b *connBalance) connState(_ net.Conn, s fasthttp.ConnState) {
	switch s {
	case fasthttp.StateNew:
		b.count(b.self).Add(1)
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		b.count(b.self).Add(-1)
	}
}

// mayAccept says whether this worker holds no more than its share of the workers'
// connections (n workers): taking one more keeps it within the share of all of them.
func (b *connBalance) mayAccept(n int) bool {
	var total int64
	for i := range n {
		total += b.count(i).Load()
	}
	return b.count(b.self).Load()*int64(n) <= total
}

// Waiting over its share is bounded: a worker never leaves connections queued for
// long because another worker is slow to take them (busy, or restarting).
const (
	balancePoll    = 200 * time.Microsecond
	balanceMaxWait = 5 * time.Millisecond
)

// balancedListener accepts only while the worker is within its share.
type balancedListener struct {
	net.Listener
	b *connBalance
	n int
}

func (l balancedListener) Accept() (net.Conn, error) {
	for waited := time.Duration(0); waited < balanceMaxWait && !l.b.mayAccept(l.n); waited += balancePoll {
		time.Sleep(balancePoll)
	}
	return l.Listener.Accept()
}
