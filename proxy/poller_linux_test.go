package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
)

// pollPair returns the accepted side of a loopback connection, in the poller's set,
// and the dialed side, a plain net.Conn.
func pollPair(t *testing.T) (*pollConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := NewPollListener(ln)
	t.Cleanup(func() { pl.Close() })
	if _, ok := pl.(*pollListener); !ok {
		t.Fatalf("NewPollListener returned a %T", pl)
	}
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc, ok := c.(*pollConn)
	if !ok {
		t.Fatalf("accepted a %T", c)
	}
	t.Cleanup(func() { pc.Close() })
	return pc, peer
}

// readResult is one Read's outcome, for reads run in a goroutine.
type readResult struct {
	n   int
	err error
	at  time.Duration
}

func readAsync(c net.Conn, p []byte, start time.Time) chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		n, err := c.Read(p)
		ch <- readResult{n, err, time.Since(start)}
	}()
	return ch
}

func TestPollListenerServesFasthttp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if _, ok := ctx.Conn().(*pollConn); !ok {
			ctx.Error(fmt.Sprintf("connection is a %T", ctx.Conn()), 500)
			return
		}
		ctx.SetBody(ctx.PostBody())
	}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(NewListener(NewPollListener(ln))) }()
	defer func() {
		s.Shutdown()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	// Backend connections dialed as the proxy dials them, in the set too: requests
	// and answers cross the poller on both sides.
	c := &fasthttp.HostClient{Addr: ln.Addr().String(), Dial: func(addr string) (net.Conn, error) {
		return dialBackend(addr, time.Second)
	}}
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := range 200 {
				body := fmt.Sprintf("client %d request %d %s", g, i, bytes.Repeat([]byte("x"), i*37))
				req.SetRequestURI("http://" + ln.Addr().String() + "/echo")
				req.Header.SetMethod("POST")
				req.SetBodyString(body)
				if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
					errs <- err
					return
				}
				if resp.StatusCode() != 200 || string(resp.Body()) != body {
					errs <- fmt.Errorf("client %d request %d: %d %.60q", g, i, resp.StatusCode(), resp.Body())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPollConnReadDeadline(t *testing.T) {
	c, peer := pollPair(t)
	const wait = 100 * time.Millisecond
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(wait)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-readAsync(c, make([]byte, 16), start):
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %d, %v; want a deadline error", r.n, r.err)
		}
		// Never early; late by at most two sweeps (and a loaded machine's slack).
		if r.at < wait || r.at > wait+2*pollTick+150*time.Millisecond {
			t.Errorf("deadline of %v fired after %v", wait, r.at)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("read did not time out in 5 s")
	}

	// Cleared, the connection reads again.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "after" {
		t.Fatalf("read after the deadline cleared: %q, %v", buf[:n], err)
	}
}

func TestPollConnPastDeadlineFailsAtOnce(t *testing.T) {
	c, _ := pollPair(t)
	start := time.Now()
	ch := readAsync(c, make([]byte, 16), start)
	time.Sleep(20 * time.Millisecond) // the read waits
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v; want a deadline error", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline in the past did not end the waiting read")
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("next read: %v; want a deadline error", err)
	}
}

func TestPollConnCloseEndsWaitingRead(t *testing.T) {
	c, _ := pollPair(t)
	ch := readAsync(c, make([]byte, 16), time.Now())
	time.Sleep(20 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("read: %v; want net.ErrClosed", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the waiting read")
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
}

func TestPollConnEOFStays(t *testing.T) {
	c, peer := pollPair(t)
	if _, err := peer.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last words" {
		t.Fatalf("ReadAll: %q, %v", got, err)
	}
	// At the end, every read says so at once: no event comes to wake a wait.
	for range 3 {
		select {
		case r := <-readAsync(c, make([]byte, 8), time.Now()):
			if r.err != io.EOF {
				t.Fatalf("read after EOF: %d, %v", r.n, r.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read after EOF waited")
		}
	}
}

// The peer's last data and its FIN in one segment make one event: the short read of
// the data must not count the socket drained, or the end is never read (no event
// comes for it). Corking the peer sends both together.
func TestPollConnReadsTheEndThatCameWithTheData(t *testing.T) {
	for range 20 {
		c, peer := pollPair(t)
		rc, err := peer.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) })
		if _, err := peer.Write([]byte("last words")); err != nil {
			t.Fatal(err)
		}
		peer.Close()
		time.Sleep(5 * time.Millisecond) // the gatherer has taken the one event
		done := make(chan string, 1)
		go func() {
			got, err := io.ReadAll(c)
			done <- fmt.Sprintf("%s %v", got, err)
		}()
		select {
		case got := <-done:
			if got != "last words <nil>" {
				t.Fatalf("ReadAll: %s", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the end that came with the data was never read")
		}
	}
}

// A write larger than the socket's buffers waits for the peer to read (EAGAIN, then
// the poller's EPOLLOUT) and delivers every byte in order.
func TestPollConnLargeWriteWaitsForTheReader(t *testing.T) {
	c, peer := pollPair(t)
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	want := sha256.Sum256(data)
	got := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		total := 0
		for total < len(data) {
			n, err := peer.Read(buf)
			h.Write(buf[:n])
			total += n
			if err != nil {
				break
			}
			if total < 1<<20 {
				time.Sleep(time.Millisecond) // slow at first: the writer's socket fills
			}
		}
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	if err := c.SetWriteDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("write: %d of %d, %v", n, len(data), err)
	}
	select {
	case sum := <-got:
		if sum != want {
			t.Fatal("the reader got other bytes than were written")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the reader did not get 16 MiB in 20 s")
	}
}

func TestPollConnWriteDeadline(t *testing.T) {
	c, _ := pollPair(t) // the peer never reads
	start := time.Now()
	if err := c.SetWriteDeadline(start.Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that never reads: %d, %v", n, err)
	}
	if n == 0 || n >= 64<<20 {
		t.Errorf("wrote %d bytes before the deadline", n)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("the deadline fired after %v", el)
	}
}

func TestPollListenerCloseEndsAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := NewPollListener(ln)
	done := make(chan error, 1)
	go func() {
		c, err := pl.Accept()
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := pl.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Accept")
	}
	// Both sockets are closed: nothing listens on the address any more.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("the address still accepts connections after Close")
	}
}

// Connections opened and closed concurrently, each exchanging its own tokens with an
// echo server: a descriptor reused by a new connection must never receive an old
// one's events or bytes, and none may be left open.
func TestPollConnsChurnWithoutCrossTalk(t *testing.T) {
	addr := echoServer(t)
	before := openSockets(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for round := range 30 {
				c, err := dialBackend(addr, time.Second)
				if err != nil {
					errs <- err
					return
				}
				if _, ok := c.(*pollConn); !ok {
					errs <- fmt.Errorf("dialed a %T", c)
					c.Close()
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				for i := range 5 {
					token := fmt.Sprintf("g%02d r%02d i%d|", g, round, i)
					if _, err := c.Write([]byte(token)); err != nil {
						errs <- err
						c.Close()
						return
					}
					buf := make([]byte, len(token))
					if _, err := io.ReadFull(c, buf); err != nil || string(buf) != token {
						errs <- fmt.Errorf("sent %q, got %q (%v)", token, buf, err)
						c.Close()
						return
					}
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The echo server's ends close as ours do; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for openSockets(t) > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if after := openSockets(t); after > before {
		t.Errorf("%d sockets open before, %d after", before, after)
	}
}

// openSockets counts the process's open sockets (other tests' pipes and the poller's
// own descriptor are not ours to count).
func openSockets(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// With no connection open the sweeper sleeps (an idle node does not wake every tick),
// and the first connection wakes it: its deadline still fires. A poller of its own,
// so that other tests' connections do not count.
func TestPollerSweeperSleepsWhileIdle(t *testing.T) {
	p, err := newPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	time.Sleep(2 * pollTick)
	before := p.now.Load()
	time.Sleep(4 * pollTick)
	if after := p.now.Load(); after != before {
		t.Fatalf("the sweeper ticked with no connection open (clock %d -> %d)", before, after)
	}

	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[1])
	c, err := p.register(fds[0], nil, nil, false)
	if err != nil {
		syscall.Close(fds[0])
		t.Fatal(err)
	}
	defer c.Close()
	const wait = 100 * time.Millisecond
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(wait)); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-readAsync(c, make([]byte, 8), start):
		if !errors.Is(r.err, os.ErrDeadlineExceeded) || r.at < wait {
			t.Fatalf("read: %v after %v; want a deadline error after %v", r.err, r.at, wait)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deadline of the first connection after idle did not fire")
	}
	// Data still arrives through this poller's set.
	if _, err := syscall.Write(fds[1], []byte("hi")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read: %q, %v", buf[:n], err)
	}
}

// BenchmarkLoopbackRoundTrip is a backend call's I/O alone: 64 bytes out, 64 back
// from an echo peer on loopback, through the poller (wait for the event) and through
// the runtime's netpoller as fastConn reads (read first, EAGAIN, wait). Run with
// -cpu 1 to see the waits as a worker (one P) has them.
func BenchmarkLoopbackRoundTrip(b *testing.B) {
	addr := echoServer(b)
	dials := map[string]func() (net.Conn, error){
		"poller": func() (net.Conn, error) { return dialBackend(addr, time.Second) },
		"netpoller": func() (net.Conn, error) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			return newFastConn(c), nil
		},
	}
	for _, name := range []string{"poller", "netpoller"} {
		b.Run(name, func(b *testing.B) {
			c, err := dials[name]()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, buf := make([]byte, 64), make([]byte, 64)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// echoServer echoes every connection's bytes back until the test ends; it returns
// its address. (A copy loop, not io.Copy: that would splice through pipes.)
func echoServer(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						if _, err := c.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// Config.Netpoller keeps backend connections with the runtime's netpoller (fastConn);
// by default they join the poller. Either way the call is served.
func TestNetpollerChoosesTheBackendConnections(t *testing.T) {
	for _, netpoller := range []bool{false, true} {
		t.Run(fmt.Sprintf("netpoller=%v", netpoller), func(t *testing.T) {
			addr := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
			st := newStateOf().api("weather", "city", httpDef("GET", "/city", "http://"+addr, ""), fsm.StageRelease)
			g := startProxy(t, Config{Netpoller: netpoller}, st.s)
			if r := g.call(t, "GET", "weather.localhost", "/city", nil); r.status != 200 || r.body != "ok" {
				t.Fatalf("call: %d %q", r.status, r.body)
			}
			g.p.mu.Lock()
			var conns []net.Conn
			for _, c := range g.p.clients {
				c.mu.Lock()
				for _, cc := range c.idle {
					conns = append(conns, cc.c)
				}
				c.mu.Unlock()
			}
			g.p.mu.Unlock()
			if len(conns) == 0 {
				t.Fatal("no idle backend connection after the call")
			}
			for _, c := range conns {
				_, isPoll := c.(*pollConn)
				_, isFast := c.(*fastConn)
				if netpoller && !isFast || !netpoller && !isPoll {
					t.Errorf("Netpoller %v: a backend connection is a %T", netpoller, c)
				}
			}
		})
	}
}
