package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// poller is the data plane's own event loop: one epoll set per process, edge-
// triggered, holding the sockets of client and backend connections (pollConn), and
// one goroutine that gathers its events. A pollConn reads only when an event said
// its socket is readable, as nginx does.
//
// Go's netpoller reads first and waits when the read fails with EAGAIN, and a
// syscall.RawConn cannot wait first (see fastConn). A proxied request meets two
// sockets that are never ready when it looks: the backend's answer right after the
// request went out, and the client's next request right after the answer did. Under
// the bench's full load that was 1.9 failing reads per request, 31% of all system
// calls (nginx makes none). Here readiness is the poller's to track, so a read that
// would fail is not made: the goroutine waits for the event instead.
//
// The gathering goroutine waits through the runtime's netpoller on the epoll fd
// itself (an epoll set is readable while it holds events), so it costs nothing
// while idle and the scheduler keeps running other goroutines. Deadlines are kept
// by a sweeper every pollTick: a read or write past its deadline fails at most two
// ticks late, never early.
type poller struct {
	epfd int
	// file is the set as the runtime's netpoller knows it; kept, as its finalizer
	// would close the set.
	file   *os.File
	rc     syscall.RawConn
	gather func(fd uintptr) bool
	events [256]syscall.EpollEvent // the gathering goroutine's alone

	conns fdTable
	seq   atomic.Uint32
	// live counts open connections (not listeners); the sweeper sleeps while there
	// are none, and woken restarts it.
	live  atomic.Int64
	woken chan struct{}
	done  chan struct{} // closed by close: the process's poller never is
	// now is the sweeper's clock (unix ns), at most a tick behind, and 0 while it
	// sleeps: a wait compares deadlines with it instead of reading the clock.
	now atomic.Int64
	// loop serves the connections of proxies with Config.EventLoop from the
	// gathering goroutine (loop_linux.go).
	loop *eventLoop
	// holdWait counts the proxies serving with Config.LoopKeepsP: while there are
	// any, wait for events in the kernel before parking (see gatherEvents).
	holdWait atomic.Int32
	// readied: dispatch signalled a goroutine's connection since the last yield (the
	// gathering goroutine's alone).
	readied bool
}

const pollTick = 25 * time.Millisecond

// epollET is EPOLLET as the uint32 an event's mask is (syscall's is a negative int).
const epollET = 1 << 31

var (
	thePoller    *poller
	thePollerErr error
	pollerOnce   sync.Once
)

// processPoller returns the process's poller, started on first use.
func processPoller() (*poller, error) {
	pollerOnce.Do(func() { thePoller, thePollerErr = newPoller() })
	return thePoller, thePollerErr
}

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	f := os.NewFile(uintptr(epfd), "tollgate-poller")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epfd: epfd, file: f, rc: rc, woken: make(chan struct{}, 1), done: make(chan struct{})}
	p.gather = p.gatherEvents
	p.now.Store(time.Now().UnixNano())
	if p.loop, err = newEventLoop(p); err != nil {
		f.Close()
		return nil, err
	}
	go p.run()
	go p.sweep()
	return p, nil
}

// run gathers events for as long as the process lives.
func (p *poller) run() {
	for {
		if err := p.rc.Read(p.gather); err != nil {
			return
		}
	}
}

// close stops a poller's goroutines and closes its set (tests make their own pollers).
func (p *poller) close() {
	close(p.done)
	p.file.Close()
}

// gatherEvents takes the events the set holds without waiting and hands each to its
// connection, until the set is empty; then it returns false: wait for the set to be
// readable again. The set signals each event it gains, so once drained nothing is
// missed, and the wait needs no empty epoll_wait of its own first. It returns true
// only when the set is gone (the poller closed).
//
// With holdWait (Config.LoopKeepsP: a worker, whose event loop is the process's
// work), a drained set is waited on in the kernel instead: a raw epoll_wait with a
// timeout, which the runtime does not see, so it neither hands the P away while the
// wait blocks (what a syscall.Syscall wait cost, as its monitor retook the P) nor runs
// the scheduler's park and wake and its own epoll_pwait for every batch of events
// (4% of a worker's user time under load). A signal (the runtime preempting the
// loop, a GC) interrupts the wait. The goroutine still parks every holdBatches
// batches, and once the set is quiet for holdWaitMs: a park is when the scheduler
// runs the timers and polls the runtime's own netpoller, and it costs nothing while
// idle. It does not hold at all while the loop has calls served off it (eventLoop.off:
// a dial, a mock's delay), whose goroutines wait on that netpoller and the scheduler,
// and it yields before holding when a batch woke a goroutine (a listener's accept, a
// connection handed to fasthttp's server): those run as soon as without holding.
func (p *poller) gatherEvents(_ uintptr) bool {
	timeout, held := 0, 0
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(p.epfd),
			uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), uintptr(timeout), 0, 0)
		switch e {
		case 0:
		case syscall.EINTR:
			runtime.Gosched() // the raw call is no preemption point: yield to what signalled
			continue
		default:
			return true
		}
		if n == 0 && timeout != 0 {
			return false // quiet: park
		}
		p.dispatch(int(n))
		if int(n) == len(p.events) {
			timeout = 0 // more may be waiting
			continue
		}
		if p.holdWait.Load() == 0 || held == holdBatches || p.loop.off > 0 {
			p.readied = false // the park lets them run
			return false
		}
		if p.readied {
			// The batch woke goroutines: let them run before the P is held.
			p.readied = false
			runtime.Gosched()
		}
		held++
		timeout = holdWaitMs
	}
}

// holdWaitMs is how long a held wait lasts before the loop parks: under load the next
// batch comes within microseconds. holdBatches bounds the batches between parks, and
// so how long a goroutine the loop readied, a timer or the runtime's netpoller waits:
// about a millisecond under the bench's load.
const (
	holdWaitMs  = 1
	holdBatches = 8
)

// dispatch hands the first n gathered events to their connections, or to the loop.
func (p *poller) dispatch(n int) {
	for i := range n {
		ev := &p.events[i]
		c := p.conns.get(int(ev.Fd))
		if c == nil || c.seq != uint32(ev.Pad) {
			continue // closed since; its fd may already be another's
		}
		if ev.Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			c.r.hup.Store(1)
		}
		switch {
		case c.lc != nil:
			p.loop.clientEvent(c.lc, ev.Events)
			continue
		case c.lb != nil:
			p.loop.backendEvent(c.lb, ev.Events)
			continue
		case c == p.loop.wake:
			p.loop.runPosted()
			continue
		}
		p.readied = true // a goroutine's connection (a listener, a handed-off client, a dial)
		if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			c.r.signal()
		}
		if ev.Events&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
			c.w.signal()
		}
	}
}

// sweep wakes the waits whose deadline has passed, every pollTick while connections
// are open.
func (p *poller) sweep() {
	t := time.NewTicker(pollTick)
	defer t.Stop()
	for {
		if p.live.Load() == 0 {
			t.Stop()
			// Asleep, the clock stops: 0 tells deadlineIn to read the real one until the
			// sweeper runs again, or a connection opened meanwhile would get a deadline
			// as old as the sleep (a loop's idle client closed 31 ms into 600, once).
			p.now.Store(0)
			select {
			case <-p.woken:
			case <-p.done:
				return
			}
			p.now.Store(time.Now().UnixNano())
			t.Reset(pollTick)
		}
		var now time.Time
		select {
		case now = <-t.C:
		case <-p.done:
			return
		}
		ns := now.UnixNano()
		p.now.Store(ns)
		p.loop.tick()
		p.conns.each(func(c *pollConn) {
			c.r.expire(ns)
			c.w.expire(ns)
		})
	}
}

// register adds a non-blocking socket the caller owns to the set: a connection, or a
// listening socket (listener).
func (p *poller) register(fd int, laddr, raddr net.Addr, listener bool) (*pollConn, error) {
	if fd < 0 || fd >= fdTableMax {
		return nil, errors.New("poller: descriptor out of range")
	}
	c := &pollConn{p: p, fd: fd, seq: p.seq.Add(1), laddr: laddr, raddr: raddr, listener: listener}
	c.refs.Store(1)
	c.r.init()
	c.w.init()
	p.conns.set(fd, c)
	ev := syscall.EpollEvent{
		Events: syscall.EPOLLIN | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET,
		Fd:     int32(fd),
		Pad:    int32(c.seq),
	}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.conns.remove(fd, c)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	if !listener && p.live.Add(1) == 1 {
		select {
		case p.woken <- struct{}{}:
		default:
		}
	}
	return c, nil
}

// pollConn is a TCP connection whose socket is in the poller's set. One reader and
// one writer use it at a time, as net.Conn's users do; Close may come from anywhere.
type pollConn struct {
	p            *poller
	fd           int
	seq          uint32 // tells this connection's events from a later one's on the same fd
	laddr, raddr net.Addr
	r, w         pollWait
	closed       atomic.Bool
	// refs counts the connection itself and each read or write in a system call: the
	// descriptor is closed when the last lets go, so it is never reused under one.
	refs      atomic.Int32
	destroyed atomic.Bool
	peerIP    []byte // the client's address as X-Forwarded-For has it, once a request used it
	listener  bool
	// lc is set while the event loop serves this client connection, lb while the
	// loop waits for this backend connection's answer. Only the gathering
	// goroutine reads or writes them: events for such a connection go to the loop
	// instead of waking a waiter.
	lc, lb *loopConn
}

// pollWait is one direction's readiness.
type pollWait struct {
	ready atomic.Uint32 // an event came since the last read that drained the socket
	// hup: the peer closed its side (or the socket failed). A short read then does
	// not drain the socket: its end is still to be read, and no further event will
	// say so when it came with the last data.
	hup      atomic.Uint32
	waiting  atomic.Uint32
	deadline atomic.Int64 // unix ns; 0: none
	wake     chan struct{}
}

func (w *pollWait) init() {
	w.ready.Store(1) // unknown: try first
	w.wake = make(chan struct{}, 1)
}

// signal records an event and wakes a waiter.
func (w *pollWait) signal() {
	w.ready.Store(1)
	if w.waiting.Load() != 0 {
		w.poke()
	}
}

func (w *pollWait) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *pollWait) expire(now int64) {
	if w.waiting.Load() != 0 {
		if d := w.deadline.Load(); d != 0 && d <= now {
			w.poke()
		}
	}
}

// wait blocks until an event, c's close or the deadline.
func (w *pollWait) wait(c *pollConn) error {
	w.waiting.Store(1)
	for {
		switch {
		case c.closed.Load():
			w.waiting.Store(0)
			return net.ErrClosed
		case w.ready.Load() != 0:
			w.waiting.Store(0)
			return nil
		}
		if d := w.deadline.Load(); d != 0 && d <= c.p.now.Load() {
			w.waiting.Store(0)
			return os.ErrDeadlineExceeded
		}
		<-w.wake
	}
}

// setDeadline records t. A deadline at or before the sweeper's clock has passed:
// it fails the next wait at once. (Comparing with the clock itself would read it on
// every request, as fasthttp sets deadlines per request.)
func (w *pollWait) setDeadline(t time.Time, now int64) {
	var d int64
	if !t.IsZero() {
		if d = t.UnixNano(); d <= now {
			d = 1
		}
	}
	w.deadline.Store(d)
	if d == 1 {
		w.poke()
	}
}

func (c *pollConn) acquire() bool {
	c.refs.Add(1)
	if c.closed.Load() {
		c.release()
		return false
	}
	return true
}

func (c *pollConn) release() {
	if c.refs.Add(-1) == 0 && c.destroyed.CompareAndSwap(false, true) {
		syscall.Close(c.fd) // leaves the epoll set with its last descriptor
	}
}

func (c *pollConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !c.acquire() {
		return 0, c.opError("read", net.ErrClosed)
	}
	defer c.release()
	for {
		n, err := c.readNow(b)
		if err != errWouldBlock {
			return n, err
		}
		if err := c.r.wait(c); err != nil {
			return 0, c.opError("read", err)
		}
	}
}

func (c *pollConn) Write(b []byte) (int, error) {
	if !c.acquire() {
		return 0, c.opError("write", net.ErrClosed)
	}
	defer c.release()
	written := 0
	for {
		n, err := c.writeNow(b[written:])
		written += n
		if err != errWouldBlock {
			return written, err
		}
		if err := c.w.wait(c); err != nil {
			return written, c.opError("write", err)
		}
	}
}

// errWouldBlock: the socket has nothing to read, or no room to write, now.
var errWouldBlock = errors.New("would block")

// readNow reads what the socket holds without waiting: errWouldBlock when no event
// said it is readable (or the read found nothing), io.EOF at its end. Read waits on
// it; the event loop calls it on sockets only it closes.
func (c *pollConn) readNow(b []byte) (int, error) {
	if c.r.ready.Load() == 0 {
		return 0, errWouldBlock
	}
	// Cleared before the call: an event that comes during it sets it again.
	c.r.ready.Store(0)
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), 0, 0, 0)
		switch e {
		case 0:
			if n == 0 || int(n) == len(b) || c.r.hup.Load() != 0 {
				c.r.ready.Store(1) // at the end, or more (or the end) may be there
			}
			if n == 0 {
				return 0, io.EOF
			}
			return int(n), nil
		case syscall.EAGAIN:
			return 0, errWouldBlock
		case syscall.EINTR:
			continue
		}
		c.r.ready.Store(1)
		return 0, c.opError("read", os.NewSyscallError("recvfrom", e))
	}
}

// writeNow writes as much of b as the socket takes without waiting: errWouldBlock,
// with the count, when it took less. Write waits on it; the event loop calls it on
// sockets only it closes.
func (c *pollConn) writeNow(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		rest := b[written:]
		c.w.ready.Store(0)
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			if n == 0 {
				return written, io.ErrUnexpectedEOF
			}
			written += int(n)
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return written, errWouldBlock
		}
		return written, c.opError("write", os.NewSyscallError("sendto", e))
	}
	return written, nil
}

func (c *pollConn) Close() error {
	if c.closed.Swap(true) {
		return c.opError("close", net.ErrClosed)
	}
	c.p.conns.remove(c.fd, c)
	if !c.listener {
		c.p.live.Add(-1)
	}
	c.r.poke()
	c.w.poke()
	c.release()
	return nil
}

func (c *pollConn) LocalAddr() net.Addr  { return c.laddr }
func (c *pollConn) RemoteAddr() net.Addr { return c.raddr }

func (c *pollConn) SetDeadline(t time.Time) error {
	now := c.p.now.Load()
	c.r.setDeadline(t, now)
	c.w.setDeadline(t, now)
	return nil
}

func (c *pollConn) SetReadDeadline(t time.Time) error {
	c.r.setDeadline(t, c.p.now.Load())
	return nil
}

func (c *pollConn) SetWriteDeadline(t time.Time) error {
	c.w.setDeadline(t, c.p.now.Load())
	return nil
}

func (c *pollConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}

// fdTable finds a connection by its descriptor without a lock: pages of atomic
// pointers, allocated as descriptors reach them.
type fdTable struct {
	pages [fdTableMax / fdPageSize]atomic.Pointer[[fdPageSize]atomic.Pointer[pollConn]]
	mu    sync.Mutex // serializes page allocation
	top   atomic.Int32
}

const (
	fdPageSize = 4096
	fdTableMax = 1 << 20
)

func (t *fdTable) get(fd int) *pollConn {
	if fd < 0 || fd >= fdTableMax {
		return nil
	}
	pg := t.pages[fd/fdPageSize].Load()
	if pg == nil {
		return nil
	}
	return pg[fd%fdPageSize].Load()
}

func (t *fdTable) set(fd int, c *pollConn) {
	pg := t.pages[fd/fdPageSize].Load()
	if pg == nil {
		t.mu.Lock()
		if pg = t.pages[fd/fdPageSize].Load(); pg == nil {
			pg = new([fdPageSize]atomic.Pointer[pollConn])
			t.pages[fd/fdPageSize].Store(pg)
		}
		t.mu.Unlock()
	}
	pg[fd%fdPageSize].Store(c)
	for {
		top := t.top.Load()
		if int32(fd) < top || t.top.CompareAndSwap(top, int32(fd)+1) {
			return
		}
	}
}

func (t *fdTable) remove(fd int, c *pollConn) {
	if pg := t.pages[fd/fdPageSize].Load(); pg != nil {
		pg[fd%fdPageSize].CompareAndSwap(c, nil)
	}
}

func (t *fdTable) each(f func(*pollConn)) {
	top := int(t.top.Load())
	for i := 0; i*fdPageSize < top; i++ {
		pg := t.pages[i].Load()
		if pg == nil {
			continue
		}
		for j := range min(fdPageSize, top-i*fdPageSize) {
			if c := pg[j].Load(); c != nil {
				f(c)
			}
		}
	}
}

// pollListener accepts connections into the poller's set. Its listening socket is a
// duplicate of the listener's, in the set too; closing the listener closes both.
type pollListener struct {
	net.Listener
	ls *pollConn // the duplicate listening socket
}

// NewPollListener returns a listener whose connections are served by the process's
// poller (Linux), or ln itself when ln is not TCP or the poller cannot start.
func NewPollListener(ln net.Listener) net.Listener {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return ln
	}
	ls, err := joinPoller(tl, tl.Addr(), nil, true)
	if err != nil {
		return ln
	}
	return &pollListener{Listener: ln, ls: ls}
}

func (l *pollListener) Accept() (net.Conn, error) {
	ls := l.ls
	if !ls.acquire() {
		return nil, ls.opError("accept", net.ErrClosed)
	}
	defer ls.release()
	for {
		if ls.r.ready.Load() == 0 {
			if err := ls.r.wait(ls); err != nil {
				return nil, ls.opError("accept", err)
			}
		}
		ls.r.ready.Store(0)
		nfd, sa, err := syscall.Accept4(ls.fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		switch err {
		case nil:
			ls.r.ready.Store(1) // more may be queued
		case syscall.EAGAIN:
			continue
		case syscall.ECONNABORTED, syscall.EINTR:
			ls.r.ready.Store(1) // a peer that gave up before we took it, or a signal
			continue
		default:
			ls.r.ready.Store(1)
			return nil, ls.opError("accept", os.NewSyscallError("accept4", err))
		}
		c, err := ls.p.adopt(nfd, sockaddrToTCP(sa))
		if err != nil {
			// Out of the set's range: serve it through the runtime's netpoller.
			f := os.NewFile(uintptr(nfd), "accepted")
			nc, ferr := net.FileConn(f)
			f.Close()
			if ferr != nil {
				continue
			}
			return newFastConn(nc), nil
		}
		return c, nil
	}
}

func (l *pollListener) Close() error {
	l.ls.Close()
	return l.Listener.Close()
}

// adopt sets up a connected socket as the net package would (no Nagle, keep-alive
// probes after 15 s) and registers it.
func (p *poller) adopt(fd int, raddr net.Addr) (*pollConn, error) {
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15)
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15)
	var laddr net.Addr
	if sa, err := syscall.Getsockname(fd); err == nil {
		laddr = sockaddrToTCP(sa)
	}
	return p.register(fd, laddr, raddr, false)
}

func sockaddrToTCP(sa syscall.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: append(net.IP(nil), a.Addr[:]...), Port: a.Port}
	}
	return &net.TCPAddr{}
}

// pollDial moves a connection the runtime dialed into the poller's set: a duplicate
// of its socket joins the set, the original closes. What cannot join is a fastConn.
func pollDial(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	pc, err := joinPoller(tc, tc.LocalAddr(), tc.RemoteAddr(), false)
	if err != nil {
		return newFastConn(c)
	}
	// The duplicate shares the socket: closing the original leaves the connection open.
	tc.Close()
	return pc
}

// joinPoller registers a duplicate of c's socket in the process's poller; the caller
// keeps c (and closes it when the duplicate is to be the only one).
func joinPoller(c syscall.Conn, laddr, raddr net.Addr, listener bool) (*pollConn, error) {
	p, err := processPoller()
	if err != nil {
		return nil, err
	}
	fd, err := dupSocket(c)
	if err != nil {
		return nil, err
	}
	pc, err := p.register(fd, laddr, raddr, listener)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return pc, nil
}

// dupSocket returns a close-on-exec duplicate of a socket's descriptor.
func dupSocket(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var e syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		nfd, e = int(r), errno
	}); err != nil {
		return -1, err
	}
	if e != 0 {
		return -1, os.NewSyscallError("fcntl", e)
	}
	return nfd, nil
}
