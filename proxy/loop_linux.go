package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// eventLoop serves client connections from the poller's gathering goroutine, as
// nginx's workers do: a request is read when its socket's event comes, run through
// the pipeline right there, and its backend call is a state of the connection, not a
// parked goroutine. The backend's answer is another event; the loop finishes the
// request from it and writes the response. No goroutine is woken, parked or
// scheduled for a request, which under load was the largest cost left between a
// worker and nginx (README, "Figures").
//
// It is for processes that run the data plane on one P (a node's workers): the loop
// is one goroutine, so a process with more Ps would serve on one of them.
//
// The loop serves the common request whole and hands the rest to the goroutine path
// (fasthttp's server, the same code that serves when the loop is off), so every
// semantic of that path holds without a copy here:
//   - a client connection moves to fasthttp's server for good, with the bytes the
//     loop had read, when a request is not simple: a body that is chunked, expected
//     (100-continue) or larger than loopMaxRequest, a header block over
//     MaxHeaderSize, anything fasthttp's parser refuses (the server then answers it
//     exactly as it would have);
//   - a backend call runs on a goroutine, which posts its end back to the loop, when
//     no idle plain connection to the backend is at hand (dials, TLS, waits for a
//     free connection), when the request does not go out in one write, and when the
//     answer is not simple (1xx, no length, over loopMaxAnswer) — the goroutine
//     reads the rest;
//   - a mock backend's delay is a timer, not a sleep.
//
// Deadlines are checked on the sweeper's tick: never early; a backend's at most two
// ticks late, as the poller's, a client's at most three (they are set from the
// sweeper's clock, not read from the system's). All state of a loopConn is the
// gathering goroutine's; other goroutines reach the loop only through post.
type eventLoop struct {
	po     *poller
	wake   *pollConn // an eventfd in the set: post writes it
	wakeFd int

	mu        sync.Mutex
	posted    []func()
	running   []func()
	signalled atomic.Bool // the eventfd was written and the loop has not run the posts yet
	sweepDue  atomic.Bool // a sweep is posted and not yet run
	sweepFn   func()      // sweep, bound once
	open      atomic.Int64

	conns []*loopConn // served connections, for deadlines and shutdown

	// Scratch for one request or answer at a time.
	rd   bytes.Reader
	br   *bufio.Reader
	sock socketWriter
	bw   *bufio.Writer
	uri  fasthttp.URI

	calls []*Call // reset Calls for the next requests

	// off counts the calls being served off the loop (offLoop, a mock's delay): while
	// any is, the poller does not hold its P between batches (see gatherEvents).
	off int
}

const (
	// loopMaxRequest is the largest request body the loop reads itself; a larger
	// one goes to fasthttp's server, which reads it as it comes.
	loopMaxRequest = 64 << 10
	// loopMaxAnswer is the largest backend answer the loop gathers before a
	// goroutine reads the rest.
	loopMaxAnswer = 256 << 10
	// loopReadChunk is the least free space a read is given.
	loopReadChunk = 4 << 10
	// loopKeepBuffer is the largest buffer a connection keeps between requests.
	loopKeepBuffer = 64 << 10
	// loopKeepCalls is how many idle Calls the loop keeps for itself: requests in
	// flight at once on a busy loop, not the peak of a burst.
	loopKeepCalls = 256
)

func newEventLoop(po *poller) (*eventLoop, error) {
	fd, _, e := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		return nil, os.NewSyscallError("eventfd2", e)
	}
	l := &eventLoop{po: po, wakeFd: int(fd)}
	l.sweepFn = l.sweep
	l.br = bufio.NewReaderSize(nil, backendReadBufferSize)
	l.bw = bufio.NewWriterSize(&l.sock, backendWriteBufferSize)
	// Registered as a listener would be: it is not a connection the sweeper counts.
	w, err := po.register(int(fd), nil, nil, true)
	if err != nil {
		syscall.Close(int(fd))
		return nil, err
	}
	// Readable only: an eventfd is always writable, and each read would bring an
	// EPOLLOUT edge of its own.
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | epollET, Fd: int32(fd), Pad: int32(w.seq)}
	if err := syscall.EpollCtl(po.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev); err != nil {
		_ = w.Close()
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l.wake = w
	return l, nil
}

// socketWriter sends what it is given at once, without waiting: what the socket does
// not take now is kept in rest, in order, for an EPOLLOUT event (or a goroutine) to
// send; err is the socket's error, after which nothing more is sent.
type socketWriter struct {
	pc   *pollConn
	rest []byte
	err  error
}

func (w *socketWriter) Write(p []byte) (int, error) {
	all := len(p)
	if w.err == nil && len(w.rest) == 0 {
		n, err := w.pc.writeNow(p)
		p = p[n:]
		if err != nil && err != errWouldBlock {
			w.err = err
		}
	}
	if w.err == nil {
		w.rest = append(w.rest, p...)
	}
	return all, nil
}

// send writes what render writes to pc now, through the loop's writer; it returns
// what pc did not take (appended to buf[:0]) and the socket's error.
func (l *eventLoop) send(pc *pollConn, buf []byte, render func(*bufio.Writer) error) ([]byte, error) {
	l.sock = socketWriter{pc: pc, rest: buf[:0]}
	l.bw.Reset(&l.sock)
	err := render(l.bw)
	if err == nil {
		err = l.bw.Flush()
	}
	if err == nil {
		err = l.sock.err
	}
	rest := l.sock.rest
	l.sock = socketWriter{}
	return rest, err
}

// post runs f on the loop. Safe for concurrent use.
func (l *eventLoop) post(f func()) {
	l.mu.Lock()
	l.posted = append(l.posted, f)
	l.mu.Unlock()
	if !l.signalled.Swap(true) {
		one := uint64(1)
		syscall.RawSyscall(syscall.SYS_WRITE, uintptr(l.wakeFd), uintptr(unsafe.Pointer(&one)), 8)
	}
}

// runPosted runs what other goroutines posted; the loop calls it on the eventfd's
// event.
func (l *eventLoop) runPosted() {
	var n uint64
	syscall.RawSyscall(syscall.SYS_READ, uintptr(l.wakeFd), uintptr(unsafe.Pointer(&n)), 8)
	// Cleared before the queue is taken: a post after this writes the eventfd again.
	l.signalled.Store(false)
	l.mu.Lock()
	run := l.posted
	l.posted, l.running = l.running[:0], nil
	l.mu.Unlock()
	for i, f := range run {
		f()
		run[i] = nil
	}
	l.mu.Lock()
	if l.running == nil {
		l.running = run[:0]
	}
	l.mu.Unlock()
}

// tick posts a deadline sweep while the loop serves connections; the sweeper calls
// it every pollTick.
func (l *eventLoop) tick() {
	if l.open.Load() > 0 && !l.sweepDue.Swap(true) {
		l.post(l.sweepFn)
	}
}

// loopConn is a client connection the loop serves, with the state of its request.
type loopConn struct {
	l   *eventLoop
	p   *Proxy
	c   *pollConn
	ctx *fasthttp.RequestCtx
	in  []byte // read, not yet served
	out []byte // answer bytes not yet sent
	// call is the request whose answer the connection waits for: from the backend
	// connection cc (an event), or from a goroutine (cc nil; it posts the end). A
	// step that leaves the answer for later sets it; series is where it is recorded.
	call     *Call
	series   *series
	h        *httpBackend
	cc       *backendConn
	answer   []byte // the backend's answer so far
	sentAt   time.Duration
	deadline int64 // unix ns by the poller's clock; 0: none
	// closeAfter: close once out is sent.
	closeAfter bool
	idx        int // in l.conns
	gone       bool
	served     int // requests; the first waits ReadTimeout, later ones IdleTimeout
}

// serveLoop accepts from ln and serves what it accepts on the loop; connections that
// are not the poller's (TLS, fallbacks) go to fasthttp's server. It returns nil after
// Shutdown.
func (p *Proxy) serveLoop(ln net.Listener) error {
	po, err := processPoller()
	if err != nil {
		return p.serveServer(ln)
	}
	p.mu.Lock()
	if p.stopping.Load() {
		p.mu.Unlock()
		return nil
	}
	p.loopLns = append(p.loopLns, ln)
	p.mu.Unlock()
	if p.cfg.LoopKeepsP {
		po.holdWait.Add(1)
		defer po.holdWait.Add(-1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if p.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return nil // as fasthttp's Serve: a closed listener ends serving
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond) // out of descriptors, say: as fasthttp does
				continue
			}
			return err
		}
		pc, ok := c.(*pollConn)
		if !ok {
			p.handOff(c)
			continue
		}
		p.connState(pc, fasthttp.StateNew)
		po.loop.open.Add(1)
		p.loopOpen.Add(1)
		po.loop.post(func() { po.loop.adopt(p, pc) })
	}
}

// connState reports a connection's state to Config.ConnState, if set.
func (p *Proxy) connState(c net.Conn, s fasthttp.ConnState) {
	if cs := p.cfg.ConnState; cs != nil {
		cs(c, s)
	}
}

// adopt starts serving pc.
func (l *eventLoop) adopt(p *Proxy, pc *pollConn) {
	lc := &loopConn{l: l, p: p, c: pc, ctx: new(fasthttp.RequestCtx), idx: len(l.conns)}
	lc.ctx.Init2(pc, fasthttpLogger{p.log}, false)
	l.conns = append(l.conns, lc)
	if p.stopping.Load() {
		l.close(lc)
		return
	}
	pc.lc = lc
	lc.deadline = l.deadlineIn(p.cfg.ReadTimeout)
	// Bytes may have come before the loop took it: ready says so.
	l.drive(lc)
}

// deadlineIn returns the deadline d from now by the poller's clock, which is up to a tick
// behind: a tick is added so that it never comes early (a client's timeouts are
// seconds; the sweep ends them at most three ticks late).
func (l *eventLoop) deadlineIn(d time.Duration) int64 {
	now := l.po.now.Load()
	if now == 0 {
		now = time.Now().UnixNano() // the sweeper sleeps (see poller.sweep)
	}
	return now + int64(d) + int64(pollTick)
}

// clientEvent takes a client socket's event.
func (l *eventLoop) clientEvent(lc *loopConn, ev uint32) {
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		lc.c.r.ready.Store(1)
	}
	if ev&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		lc.c.w.ready.Store(1)
	}
	l.drive(lc)
}

// drive moves lc on as far as it can without waiting: send what is pending, read,
// serve every whole request read.
func (l *eventLoop) drive(lc *loopConn) {
	for !lc.gone {
		if len(lc.out) > 0 {
			if !l.flush(lc) {
				return
			}
		}
		if lc.closeAfter {
			l.close(lc)
			return
		}
		if lc.call != nil {
			return // the answer is an event or a post away
		}
		switch l.parseRequest(lc) {
		case frameWhole:
			l.serve(lc)
			continue
		case frameOther:
			l.handOff(lc)
			return
		}
		if lc.c.r.ready.Load() == 0 {
			if len(lc.in) == 0 && lc.served > 0 {
				lc.deadline = l.deadlineIn(lc.p.cfg.IdleTimeout)
			} else if lc.deadline == 0 {
				lc.deadline = l.deadlineIn(lc.p.cfg.ReadTimeout)
			}
			return
		}
		if !l.fill(lc) {
			return
		}
	}
}

// fill reads what the client's socket holds. It returns false once lc is closed.
func (l *eventLoop) fill(lc *loopConn) bool {
	if cap(lc.in)-len(lc.in) < loopReadChunk {
		lc.in = append(make([]byte, 0, max(2*cap(lc.in), 2*loopReadChunk)), lc.in...)
	}
	n, err := lc.c.readNow(lc.in[len(lc.in):cap(lc.in)])
	switch {
	case err == errWouldBlock:
		return true
	case err != nil:
		l.close(lc) // EOF or reset: whatever came unanswered goes with it, as fasthttp's
		return false
	}
	if len(lc.in) == 0 && n > 0 {
		// A request starts: ReadTimeout runs from its first byte.
		lc.deadline = l.deadlineIn(lc.p.cfg.ReadTimeout)
	}
	lc.in = lc.in[:len(lc.in)+n]
	return true
}

// parseRequest parses the request at the head of lc.in into lc.ctx if it is whole,
// and takes its bytes off lc.in.
func (l *eventLoop) parseRequest(lc *loopConn) int {
	if len(lc.in) == 0 {
		return frameMore
	}
	cfg := &lc.p.cfg
	req := &lc.ctx.Request
	req.Reset()
	l.rd.Reset(lc.in)
	l.br.Reset(&l.rd)
	if err := req.Header.Read(l.br); err != nil {
		// Not whole yet, or not a request fasthttp takes: the header block's end
		// tells which.
		if _, v := headerEnd(lc.in, min(cfg.MaxHeaderSize, l.br.Size())); v == frameMore {
			return frameMore
		}
		return frameOther // fasthttp's server answers it as it always has
	}
	hlen := l.consumed(lc.in)
	if hlen > cfg.MaxHeaderSize || req.MayContinue() {
		return frameOther
	}
	blen := req.Header.ContentLength()
	switch {
	case blen == -2: // neither length nor chunked: a request has no body
		blen = 0
	case blen < 0 || blen > min(cfg.MaxBodySize, loopMaxRequest):
		return frameOther
	}
	if len(lc.in) < hlen+blen {
		return frameMore
	}
	if err := req.ContinueReadBody(l.br, cfg.MaxBodySize, false); err != nil || l.consumed(lc.in) != hlen+blen {
		return frameOther
	}
	// The server refuses a target its URI parser refuses (400) before the handler.
	// fasthttp keeps a request's own parse error to itself, so the loop parses into
	// its URI and hands the request that parse: copying it costs less than the
	// second parse the handler's first look at the URI would make.
	if err := l.uri.Parse(req.Header.Host(), req.Header.RequestURI()); err != nil {
		return frameOther
	}
	req.SetURI(&l.uri)
	rest := copy(lc.in, lc.in[hlen+blen:])
	lc.in = lc.in[:rest]
	if rest == 0 && cap(lc.in) > loopKeepBuffer {
		lc.in = nil
	}
	return frameWhole
}

// consumed is how much of b, which the loop's reader reads, was read.
func (l *eventLoop) consumed(b []byte) int { return len(b) - l.rd.Len() - l.br.Buffered() }

// serve runs the request parsed into lc.ctx.
func (l *eventLoop) serve(lc *loopConn) {
	ctx := lc.ctx
	req := &ctx.Request // parseRequest reset it; respond left the response reset
	lc.deadline = 0
	lc.served++
	lc.closeAfter = req.Header.ConnectionClose()
	lc.p.connState(lc.c, fasthttp.StateActive)

	p := lc.p
	c := l.takeCall(p)
	p.start(c, ctx)
	c.lc = lc
	s := p.serve(c, p.table.Load())
	if lc.call != nil { // the last step left the answer to an event or a goroutine
		lc.series = s
		return
	}
	l.endCall(lc, c, s)
	l.respond(lc)
}

// takeCall returns a reset Call from the loop's own free list: only the loop's
// goroutine starts and ends its Calls, so it needs none of sync.Pool's care (whose
// Get and Put were 1% of a worker's user time). Past loopKeepCalls the pool takes
// over.
func (l *eventLoop) takeCall(p *Proxy) *Call {
	if n := len(l.calls); n > 0 {
		c := l.calls[n-1]
		l.calls = l.calls[:n-1]
		return c
	}
	return p.calls.Get().(*Call)
}

// endCall ends lc's request c and keeps c for the next.
func (l *eventLoop) endCall(lc *loopConn, c *Call, s *series) {
	lc.p.end(c, s)
	if len(l.calls) < loopKeepCalls {
		l.calls = append(l.calls, c)
	} else {
		lc.p.calls.Put(c)
	}
}

// respond sends the finished request's response as fasthttp's server would (what the
// socket does not take now stays in lc.out) and readies the connection for the next
// request.
func (l *eventLoop) respond(lc *loopConn) {
	ctx := lc.ctx
	req, resp := &ctx.Request, &ctx.Response
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	if lc.closeAfter || resp.ConnectionClose() || lc.p.stopping.Load() {
		lc.closeAfter = true
		resp.SetConnectionClose()
	} else if !req.Header.IsHTTP11() {
		resp.Header.Set(fasthttp.HeaderConnection, "keep-alive")
	}
	if len(resp.Header.Server()) == 0 {
		resp.Header.SetServer(serverName)
	}
	rest, err := l.send(lc.c, lc.out, resp.Write)
	lc.out = rest
	if err != nil {
		lc.out = lc.out[:0]
		lc.closeAfter = true // the client is gone
	}
	resp.Reset() // the request is reset when the next one is parsed
	lc.p.connState(lc.c, fasthttp.StateIdle)
	if len(lc.out) > 0 {
		lc.deadline = l.deadlineIn(lc.p.cfg.WriteTimeout)
	}
}

// flush sends lc.out. It returns true once all is sent, false while the socket is
// full (an EPOLLOUT event resumes) or once lc is closed.
func (l *eventLoop) flush(lc *loopConn) bool {
	n, err := lc.c.writeNow(lc.out)
	if err != nil && err != errWouldBlock {
		l.close(lc)
		return false
	}
	if n < len(lc.out) {
		rest := copy(lc.out, lc.out[n:])
		lc.out = lc.out[:rest]
		return false
	}
	lc.out = lc.out[:0]
	if cap(lc.out) > loopKeepBuffer {
		lc.out = nil
	}
	lc.deadline = 0
	return true
}

// close closes a connection the loop serves (not one waiting on a goroutine).
func (l *eventLoop) close(lc *loopConn) {
	l.forget(lc)
	_ = lc.c.Close()
	lc.p.connState(lc.c, fasthttp.StateClosed)
}

// forget takes lc off the loop.
func (l *eventLoop) forget(lc *loopConn) {
	if lc.gone {
		return
	}
	lc.gone = true
	lc.c.lc = nil
	last := l.conns[len(l.conns)-1]
	l.conns[lc.idx] = last
	last.idx = lc.idx
	l.conns[len(l.conns)-1] = nil
	l.conns = l.conns[:len(l.conns)-1]
	l.open.Add(-1)
	lc.p.loopOpen.Add(-1)
}

// handOff gives the connection, with the bytes read and not served, to fasthttp's
// server for the rest of its life.
func (l *eventLoop) handOff(lc *loopConn) {
	l.forget(lc)
	lc.p.connState(lc.c, fasthttp.StateClosed) // the server counts it anew when it takes it
	var c net.Conn = lc.c
	if len(lc.in) > 0 {
		c = &replayConn{pollConn: lc.c, pending: lc.in}
	}
	lc.p.handOff(c)
}

// replayConn is a connection whose first bytes were read already.
type replayConn struct {
	*pollConn
	pending []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.pollConn.Read(b)
}

// forward sends the request to h's backend for a request the loop serves: on an idle
// connection at hand, in one write, the answer awaited as an event; otherwise on a
// goroutine. It returns false: the request is the loop's until the answer comes.
func (lc *loopConn) forward(c *Call, h *httpBackend, sent time.Duration) bool {
	l := lc.l
	req, resp := &c.Ctx.Request, &c.Ctx.Response
	deadline := c.Start.Add(sent + h.timeout)
	cc := h.client.idleConn()
	pc := l.waitable(cc)
	switch {
	case pc != nil && pc.r.hup.Load() != 0:
		h.client.discard(cc) // the backend closed it while idle
		lc.goForward(c, h, sent, deadline)
		return false
	case pc == nil || cc.br.Buffered() > 0:
		if cc != nil {
			h.client.release(cc, cc.lastUse)
		}
		lc.goForward(c, h, sent, deadline)
		return false
	}
	req.URI().DisablePathNormalizing = true
	rest, err := l.send(pc, lc.answer, req.Write)
	lc.answer = rest[:0]
	if err != nil {
		h.client.discard(cc)
		// Likely a connection the backend closed while it was idle (or a request
		// fasthttp cannot write): the goroutine path retries idempotent requests
		// on a fresh connection, and answers the rest.
		lc.goForward(c, h, sent, deadline)
		return false
	}
	if len(rest) > 0 {
		rest = append([]byte(nil), rest...)
		lc.call, lc.h, lc.sentAt = c, h, sent
		l.offLoop(func() error { return h.client.finishRoundTrip(cc, rest, req, resp, c.Start, deadline) },
			func(err error) { l.backendDone(lc, err) })
		return false
	}
	lc.call, lc.h, lc.cc, lc.sentAt = c, h, cc, sent
	lc.deadline = deadline.UnixNano()
	pc.lb = lc
	return false
}

// waitable returns cc's connection if the loop can wait on it (it is in the loop's
// own poller), else nil.
func (l *eventLoop) waitable(cc *backendConn) *pollConn {
	if cc == nil {
		return nil
	}
	if pc, ok := cc.c.(*pollConn); ok && pc.p == l.po {
		return pc
	}
	return nil
}

// goForward makes the backend call on a goroutine, which posts its end to the loop.
func (lc *loopConn) goForward(c *Call, h *httpBackend, sent time.Duration, deadline time.Time) {
	l := lc.l
	lc.call, lc.h, lc.sentAt = c, h, sent
	l.offLoop(func() error { return h.client.do(&c.Ctx.Request, &c.Ctx.Response, c.Start, deadline) },
		func(err error) { l.backendDone(lc, err) })
}

// offLoop runs work on a goroutine and then end, with work's error, on the loop. The
// goroutine may wait on the runtime's netpoller (a dial) and on the scheduler, which
// a loop holding its P would keep waiting, so the loop does not hold it meanwhile.
func (l *eventLoop) offLoop(work func() error, end func(error)) {
	l.off++
	go func() {
		err := work()
		l.post(func() {
			l.off--
			end(err)
		})
	}()
}

// after answers the request with answer once d has passed (a mock's delay).
func (lc *loopConn) after(c *Call, d time.Duration, answer func(*Call) bool) bool {
	l := lc.l
	lc.call = c
	l.off++ // the timer fires from the scheduler
	time.AfterFunc(d, func() {
		l.post(func() {
			l.off--
			answer(c)
			l.callDone(lc)
		})
	})
	return false
}

// backendEvent takes an event of the backend connection lc waits on.
func (l *eventLoop) backendEvent(lc *loopConn, ev uint32) {
	pc := lc.cc.c.(*pollConn)
	if ev&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
		pc.w.ready.Store(1)
	}
	if ev&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) == 0 {
		return
	}
	pc.r.ready.Store(1)
	l.readAnswer(lc)
}

// readAnswer reads what the backend sent and finishes the call once the answer is
// whole.
func (l *eventLoop) readAnswer(lc *loopConn) {
	pc := lc.cc.c.(*pollConn)
	eof := false
	for pc.r.ready.Load() != 0 {
		if cap(lc.answer)-len(lc.answer) < loopReadChunk {
			lc.answer = append(make([]byte, 0, max(2*cap(lc.answer), 4*loopReadChunk)), lc.answer...)
		}
		n, err := pc.readNow(lc.answer[len(lc.answer):cap(lc.answer)])
		if err == errWouldBlock {
			break
		}
		if err != nil {
			eof = true
			break
		}
		lc.answer = lc.answer[:len(lc.answer)+n]
	}
	req, resp := &lc.call.Ctx.Request, &lc.call.Ctx.Response
	n, verdict := l.parseAnswer(lc.answer, req, resp, lc.h.client.maxBody)
	switch {
	case verdict == frameWhole:
		extra := n < len(lc.answer)
		cc := l.unwait(lc)
		if extra || eof || resp.ConnectionClose() {
			lc.h.client.discard(cc)
		} else {
			lc.h.client.release(cc, lc.call.Start)
		}
		l.backendDone(lc, nil)
	case verdict == frameOther || len(lc.answer) > loopMaxAnswer:
		// Not one the loop frames (1xx, read to close, large): a goroutine reads on.
		got := append([]byte(nil), lc.answer...)
		cc := l.unwait(lc)
		c, h := lc.call, lc.h
		l.offLoop(func() error {
			br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(got), cc.c), backendReadBufferSize)
			err := h.client.readAnswer(br, &c.Ctx.Request, &c.Ctx.Response)
			h.client.discard(cc) // br may hold bytes past the answer
			return err
		}, func(err error) { l.backendDone(lc, err) })
	case eof:
		err := io.ErrUnexpectedEOF
		nothing := len(lc.answer) == 0
		if nothing {
			err = io.EOF
		}
		lc.h.client.discard(l.unwait(lc))
		if nothing && retriable(&lc.call.Ctx.Request, err) {
			// The backend closed the idle connection before it read the request.
			c, h := lc.call, lc.h
			lc.goForward(c, h, lc.sentAt, c.Start.Add(lc.sentAt+h.timeout))
			return
		}
		l.backendDone(lc, err)
	}
}

// parseAnswer parses the backend's answer to req at the head of b into resp if it is
// whole, and returns its length.
func (l *eventLoop) parseAnswer(b []byte, req *fasthttp.Request, resp *fasthttp.Response, maxBody int) (int, int) {
	l.rd.Reset(b)
	l.br.Reset(&l.rd)
	if err := resp.Header.Read(l.br); err != nil {
		if _, v := headerEnd(b, l.br.Size()); v == frameMore {
			return 0, frameMore
		}
		return 0, frameOther
	}
	hlen := l.consumed(b)
	code := resp.StatusCode()
	switch {
	case code < 200:
		return 0, frameOther // interim answers: fasthttp reads past them
	case req.Header.IsHead() || code == 204 || code == 304:
		// No body follows (for a HEAD, whatever the headers say): as readAnswer.
		return hlen, frameWhole
	}
	blen := resp.Header.ContentLength()
	switch {
	case blen >= 0:
		if len(b) < hlen+blen {
			return 0, frameMore
		}
	case blen == -1:
		n, v := frameChunks(b[hlen:])
		if v != frameWhole {
			return 0, v
		}
		blen = n
	default:
		return 0, frameOther // to the connection's close
	}
	err := resp.ReadBody(l.br, maxBody)
	if err == nil && resp.Header.ContentLength() == -1 {
		err = resp.Header.ReadTrailer(l.br)
	}
	if err != nil || l.consumed(b) != hlen+blen {
		return 0, frameOther
	}
	return hlen + blen, frameWhole
}

// unwait stops waiting on lc's backend connection, drops what was read of its
// answer, and returns the connection for the caller to release or discard.
func (l *eventLoop) unwait(lc *loopConn) *backendConn {
	cc := lc.cc
	cc.c.(*pollConn).lb = nil
	lc.cc = nil
	lc.deadline = 0
	lc.answer = lc.answer[:0]
	return cc
}

// backendDone finishes lc's request with its backend's answer (or err).
func (l *eventLoop) backendDone(lc *loopConn, err error) {
	lc.h.answered(lc.call, lc.sentAt, err)
	lc.h = nil
	l.callDone(lc)
}

// callDone ends the request lc waited for and moves the connection on.
func (l *eventLoop) callDone(lc *loopConn) {
	c, s := lc.call, lc.series
	lc.call, lc.series = nil, nil
	l.endCall(lc, c, s)
	l.respond(lc)
	if cap(lc.answer) > loopKeepBuffer {
		lc.answer = nil // a large answer's buffer is not kept for the next
	}
	l.drive(lc)
}

// sweep ends what is past its deadline: a backend answer (D504TO), a client that
// sent nothing (idle) or not all of its request (408) in time, an answer the client
// does not take.
func (l *eventLoop) sweep() {
	l.sweepDue.Store(false)
	now := l.po.now.Load()
	for i := 0; i < len(l.conns); i++ {
		lc := l.conns[i]
		if lc.deadline == 0 || lc.deadline > now {
			continue
		}
		switch {
		case lc.cc != nil:
			lc.h.client.discard(l.unwait(lc))
			l.backendDone(lc, fasthttp.ErrTimeout)
		case lc.call != nil:
			continue // a goroutine keeps its own deadline
		case len(lc.out) == 0 && len(lc.in) > 0:
			lc.p.errorHandler(lc.ctx, os.ErrDeadlineExceeded)
			lc.closeAfter = true
			l.respond(lc)
			l.drive(lc)
		default:
			l.close(lc)
		}
		if i < len(l.conns) && l.conns[i] != lc {
			i-- // lc left; another took its place
		}
	}
}

// closeIdle closes p's connections that wait for a request with nothing read (a
// shutdown's first step; the rest close after their answer).
func (l *eventLoop) closeIdle(p *Proxy) {
	for i := 0; i < len(l.conns); i++ {
		lc := l.conns[i]
		if lc.p != p || lc.call != nil || len(lc.in) > 0 || len(lc.out) > 0 {
			continue
		}
		l.close(lc)
		i--
	}
}

// finishRoundTrip sends the rest of a request the loop began to write on cc and reads
// the answer, on a goroutine.
func (b *backendClient) finishRoundTrip(cc *backendConn, rest []byte, req *fasthttp.Request, resp *fasthttp.Response, start, deadline time.Time) error {
	err := cc.c.SetWriteDeadline(deadline)
	if err == nil {
		_, err = cc.c.Write(rest)
	}
	if err == nil {
		err = cc.c.SetReadDeadline(deadline)
	}
	if err == nil {
		err = b.readAnswer(cc.br, req, resp)
	}
	if err != nil || resp.ConnectionClose() {
		b.discard(cc)
	} else {
		b.release(cc, start)
	}
	return err
}

// drainLoop closes p's connections on the loop as they fall idle, until none is
// left or ctx ends (Shutdown).
func (p *Proxy) drainLoop(ctx context.Context) error {
	if p.loopOpen.Load() == 0 {
		return nil
	}
	po, err := processPoller()
	if err != nil {
		return nil
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for p.loopOpen.Load() > 0 {
		po.loop.post(func() { po.loop.closeIdle(p) })
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
