package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
)

// loopGateway starts a gateway served by the event loop.
func loopGateway(t *testing.T, cfg Config, s *fsm.State) *testGateway {
	t.Helper()
	cfg.EventLoop = true
	return startProxy(t, cfg, s)
}

// rawClient is a client connection written and read byte for byte.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReaderSize(c, 64<<10)}
}

func (r *rawClient) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, s); err != nil {
		r.t.Fatal(err)
	}
}

// answer reads one response (headLess: to a HEAD request).
func (r *rawClient) answer(head bool) *fasthttp.Response {
	r.t.Helper()
	resp := new(fasthttp.Response)
	resp.SkipBody = head
	if err := resp.Read(r.br); err != nil {
		r.t.Fatalf("reading the answer: %v", err)
	}
	return resp
}

func get(path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: g.localhost\r\n" + strings.Join(extra, "") + "\r\n"
}

// servedByLoop waits (bounded) until the gateway's loop serves n connections.
func servedByLoop(t *testing.T, g *testGateway, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for g.p.loopOpen.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the loop serves %d connections, want %d", g.p.loopOpen.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoopServesPipelinedAndTrickledRequests(t *testing.T) {
	s := newStateOf().api("g", "a", mockDef("GET", "/a", "alpha"), fsm.StageRelease).
		api("g", "b", mockDef("GET", "/b", "beta"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)
	rc := dialRaw(t, g.addr)

	rc.send(get("/a") + get("/b") + get("/a"))
	ids := map[string]bool{}
	for i, want := range []string{"alpha", "beta", "alpha"} {
		resp := rc.answer(false)
		if resp.StatusCode() != 200 || string(resp.Body()) != want {
			t.Fatalf("pipelined answer %d: %d %q, want 200 %q", i, resp.StatusCode(), resp.Body(), want)
		}
		ids[string(resp.Header.Peek("X-Ca-Request-Id"))] = true
	}
	if len(ids) != 3 {
		t.Fatalf("request ids %v: want three different ones", ids)
	}
	servedByLoop(t, g, 1)

	// One request a few bytes at a time: the loop waits for the rest.
	req := get("/b")
	for i := 0; i < len(req); i += 7 {
		rc.send(req[i:min(i+7, len(req))])
		time.Sleep(2 * time.Millisecond)
	}
	if resp := rc.answer(false); string(resp.Body()) != "beta" {
		t.Fatalf("trickled request: %q", resp.Body())
	}
	servedByLoop(t, g, 1)

	// HTTP/1.0 keeps the connection only when asked, and is told so.
	rc.send("GET /a HTTP/1.0\r\nHost: g.localhost\r\nConnection: keep-alive\r\n\r\n")
	if resp := rc.answer(false); string(resp.Header.Peek("Connection")) != "keep-alive" || string(resp.Body()) != "alpha" {
		t.Fatalf("HTTP/1.0 keep-alive: %q %q", resp.Header.Peek("Connection"), resp.Body())
	}
	// HEAD (the API takes GET only: 405): the headers, no body.
	rc.send("HEAD /a HTTP/1.1\r\nHost: g.localhost\r\n\r\n")
	if resp := rc.answer(true); resp.StatusCode() != 405 || resp.Header.ContentLength() <= 0 || len(resp.Body()) != 0 {
		t.Fatalf("HEAD: %d length %d body %q", resp.StatusCode(), resp.Header.ContentLength(), resp.Body())
	}
	// Connection: close is answered, then the connection ends.
	rc.send(get("/b", "Connection: close\r\n"))
	if resp := rc.answer(false); !resp.ConnectionClose() || string(resp.Body()) != "beta" {
		t.Fatalf("close: %v %q", resp.ConnectionClose(), resp.Body())
	}
	if _, err := rc.br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close, read %v, want EOF", err)
	}
	// HTTP/1.0 without keep-alive: one answer, then the end.
	old := dialRaw(t, g.addr)
	old.send("GET /a HTTP/1.0\r\nHost: g.localhost\r\n\r\n")
	if resp := old.answer(false); string(resp.Body()) != "alpha" {
		t.Fatalf("HTTP/1.0: %q", resp.Body())
	}
	if _, err := old.br.ReadByte(); err != io.EOF {
		t.Fatalf("after an HTTP/1.0 answer, read %v, want EOF", err)
	}
	servedByLoop(t, g, 0)
}

// lineEchoBackend answers each request with its method, path and body on one line.
func lineEchoBackend(t *testing.T) string {
	return startBackend(t, func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "%s %s %s", ctx.Method(), ctx.Path(), ctx.Request.Body())
	})
}

func TestLoopHandsOffWhatItDoesNotFrame(t *testing.T) {
	be := lineEchoBackend(t)
	s := newStateOf().api("g", "e", httpDef("ANY", "/e", "http://"+be, "/echo"), fsm.StageRelease).s
	big := strings.Repeat("x", loopMaxRequest+1)
	cases := []struct {
		name, req, want string
		status          int
		code            string
	}{
		{"chunked body", "POST /e HTTP/1.1\r\nHost: g.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "POST /echo abcde", 200, ""},
		{"body over the loop's limit", fmt.Sprintf("POST /e HTTP/1.1\r\nHost: g.localhost\r\nContent-Length: %d\r\n\r\n%s", len(big), big), "POST /echo " + big, 200, ""},
		{"headers over MaxHeaderSize", get("/e", "X-Big: "+strings.Repeat("h", 9<<10)+"\r\n"), "", 413, "I413UL"},
		{"not HTTP", "GARBAGE\r\n\r\n", "", 400, ErrBadRequest.Code},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := loopGateway(t, Config{}, s)
			rc := dialRaw(t, g.addr)
			rc.send(get("/e")) // the loop serves the first
			if resp := rc.answer(false); string(resp.Body()) != "GET /echo " {
				t.Fatalf("first answer %q", resp.Body())
			}
			servedByLoop(t, g, 1)
			rc.send(tc.req)
			resp := rc.answer(false)
			if resp.StatusCode() != tc.status || string(resp.Header.Peek("X-Ca-Error-Code")) != tc.code {
				t.Fatalf("%d %q (%s), want %d %q", resp.StatusCode(), resp.Header.Peek("X-Ca-Error-Code"), resp.Body(), tc.status, tc.code)
			}
			if tc.want != "" && string(resp.Body()) != tc.want {
				t.Fatalf("body %.40q..., want %.40q...", resp.Body(), tc.want)
			}
			servedByLoop(t, g, 0) // fasthttp's server has it now
			if tc.status == 200 {
				rc.send(get("/e"))
				if resp := rc.answer(false); string(resp.Body()) != "GET /echo " {
					t.Fatalf("after the hand-off: %q", resp.Body())
				}
			}
		})
	}

	t.Run("100-continue", func(t *testing.T) {
		g := loopGateway(t, Config{}, s)
		rc := dialRaw(t, g.addr)
		rc.send("POST /e HTTP/1.1\r\nHost: g.localhost\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
		line, err := rc.br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 Continue") {
			t.Fatalf("%q %v, want 100 Continue", line, err)
		}
		if _, err := rc.br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		rc.send("abc")
		if resp := rc.answer(false); string(resp.Body()) != "POST /echo abc" {
			t.Fatalf("%q", resp.Body())
		}
	})
}

// rawBackend serves each connection with serve, on real sockets, until cleanup.
func rawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln := listen(t)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

func TestLoopReadsEveryAnswerFraming(t *testing.T) {
	large := strings.Repeat("L", loopMaxAnswer+100)
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/chunked":
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				for i := range 3 {
					fmt.Fprintf(w, "part%d;", i)
					_ = w.Flush()
					time.Sleep(5 * time.Millisecond) // chunks in separate segments
				}
			})
		case "/large":
			ctx.SetBodyString(large)
		case "/empty":
			ctx.SetStatusCode(204)
		default:
			ctx.SetBodyString("plain")
		}
	})
	toClose := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		var req fasthttp.Request
		if req.Read(br) == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close")
		}
	})
	s := newStateOf().api("g", "p", httpDef("ANY", "/p/[x]", "http://"+be, "/[x]"), fsm.StageRelease).
		api("g", "c", httpDef("GET", "/close", "http://"+toClose, "/"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)
	rc := dialRaw(t, g.addr)
	for _, tc := range []struct{ path, want string }{
		{"/p/plain", "plain"}, {"/p/chunked", "part0;part1;part2;"}, {"/p/large", large},
		{"/p/empty", ""}, {"/close", "until the close"}, {"/p/plain", "plain"},
	} {
		rc.send(get(tc.path))
		resp := rc.answer(false)
		if resp.StatusCode()/100 != 2 || string(resp.Body()) != tc.want {
			t.Fatalf("%s: %d %.40q, want %.40q", tc.path, resp.StatusCode(), resp.Body(), tc.want)
		}
	}
	rc.send("HEAD /p/plain HTTP/1.1\r\nHost: g.localhost\r\n\r\n")
	if resp := rc.answer(true); resp.StatusCode() != 200 || resp.Header.ContentLength() != len("plain") {
		t.Fatalf("HEAD: %d length %d", resp.StatusCode(), resp.Header.ContentLength())
	}
	servedByLoop(t, g, 1) // every answer, however framed, on the loop's connection
}

func TestLoopBackendTimeoutAndDelayDoNotBlockIt(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			time.Sleep(time.Second)
		}
		ctx.SetBodyString("ok")
	})
	slow := httpDef("GET", "/slow", "http://"+be, "/slow")
	slow.Backend.Timeout = fsm.Duration(200 * time.Millisecond)
	delayed := mockDef("GET", "/delayed", "late")
	delayed.Backend.Delay = fsm.Duration(300 * time.Millisecond)
	s := newStateOf().api("g", "s", slow, fsm.StageRelease).api("g", "d", delayed, fsm.StageRelease).
		api("g", "f", httpDef("GET", "/fast", "http://"+be, "/fast"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)

	type timed struct {
		resp *fasthttp.Response
		took time.Duration
	}
	call := func(path string) chan timed {
		ch := make(chan timed, 1)
		rc := dialRaw(t, g.addr)
		start := time.Now()
		rc.send(get(path))
		go func() { ch <- timed{rc.answer(false), time.Since(start)} }()
		return ch
	}
	slowCh, delayedCh := call("/slow"), call("/delayed")
	time.Sleep(20 * time.Millisecond)
	fast := <-call("/fast")
	if string(fast.resp.Body()) != "ok" || fast.took > 150*time.Millisecond {
		t.Fatalf("a fast call beside slow ones: %q in %v", fast.resp.Body(), fast.took)
	}
	got := <-slowCh
	if got.resp.StatusCode() != 504 || string(got.resp.Header.Peek("X-Ca-Error-Code")) != ErrBackendTimeout.Code {
		t.Fatalf("slow backend: %d %q", got.resp.StatusCode(), got.resp.Header.Peek("X-Ca-Error-Code"))
	}
	// Never early; at most two sweeps (and this machine's scheduling) late.
	if got.took < 200*time.Millisecond || got.took > 200*time.Millisecond+2*pollTick+300*time.Millisecond {
		t.Fatalf("the backend timeout fired after %v, want 200ms (+2 ticks)", got.took)
	}
	d := <-delayedCh
	if string(d.resp.Body()) != "late" || d.took < 300*time.Millisecond {
		t.Fatalf("delayed mock: %q after %v", d.resp.Body(), d.took)
	}
}

func TestLoopRetriesABackendThatClosedItsIdleConnection(t *testing.T) {
	var conns atomic.Int32
	be := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		var req fasthttp.Request
		if req.Read(br) != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// Keep-alive by the headers, then gone: the next call finds a dead
		// connection in the pool.
		time.Sleep(30 * time.Millisecond)
	})
	s := newStateOf().api("g", "r", httpDef("GET", "/r", "http://"+be, "/"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)
	rc := dialRaw(t, g.addr)
	for i := range 3 {
		rc.send(get("/r"))
		if resp := rc.answer(false); resp.StatusCode() != 200 || string(resp.Body()) != "ok" {
			t.Fatalf("call %d: %d %q %q", i, resp.StatusCode(), resp.Header.Peek("X-Ca-Error-Code"), resp.Body())
		}
		time.Sleep(80 * time.Millisecond) // the backend has closed by now
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d backend connections, want 3 (one per call, each retried on a fresh one)", n)
	}
}

func TestLoopSendsALargeAnswerToASlowReader(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 256<<10) // 4 MiB: far more than a socket takes
	s := newStateOf().api("g", "big", mockDef("GET", "/big", body), fsm.StageRelease).
		api("g", "small", mockDef("GET", "/small", "small"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)
	slow := dialRaw(t, g.addr)
	slow.send(get("/big"))
	time.Sleep(50 * time.Millisecond) // the loop fills the socket and waits for room
	other := dialRaw(t, g.addr)
	other.send(get("/small"))
	if resp := other.answer(false); string(resp.Body()) != "small" {
		t.Fatalf("beside a blocked answer: %q", resp.Body())
	}
	resp := slow.answer(false)
	if !bytes.Equal(resp.Body(), []byte(body)) {
		t.Fatalf("large answer: %d bytes, want %d", len(resp.Body()), len(body))
	}
}

func TestLoopTimesOutIdleAndSlowClients(t *testing.T) {
	s := newStateOf().api("g", "a", mockDef("GET", "/a", "alpha"), fsm.StageRelease).s
	g := loopGateway(t, Config{IdleTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond}, s)

	idle := dialRaw(t, g.addr)
	idle.send(get("/a"))
	idle.answer(false)
	start := time.Now()
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if took := time.Since(start); took < 200*time.Millisecond || took > 200*time.Millisecond+3*pollTick+300*time.Millisecond {
		t.Fatalf("idle connection closed after %v, want 200ms (+3 ticks)", took)
	}

	partial := dialRaw(t, g.addr)
	partial.send("GET /a HTTP/1.1\r\nHost: g.local")
	resp := partial.answer(false)
	if resp.StatusCode() != ErrRequestTimeout.Status || string(resp.Header.Peek("X-Ca-Error-Code")) != ErrRequestTimeout.Code || !resp.ConnectionClose() {
		t.Fatalf("half a request: %d %q close=%v", resp.StatusCode(), resp.Header.Peek("X-Ca-Error-Code"), resp.ConnectionClose())
	}
	servedByLoop(t, g, 0)
}

func TestLoopShutdownFinishesCallsInFlight(t *testing.T) {
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(300 * time.Millisecond)
		ctx.SetBodyString("finished")
	})
	s := newStateOf().api("g", "s", httpDef("GET", "/s", "http://"+be, "/"), fsm.StageRelease).s
	var open atomic.Int64
	cfg := Config{EventLoop: true, ConnState: func(_ net.Conn, st fasthttp.ConnState) {
		switch st {
		case fasthttp.StateNew:
			open.Add(1)
		case fasthttp.StateClosed, fasthttp.StateHijacked:
			open.Add(-1)
		}
	}}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.Update(s)
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- p.Serve(NewPollListener(ln)) }()

	idle := dialRaw(t, ln.Addr().String())
	handedOff := dialRaw(t, ln.Addr().String())
	handedOff.send("POST /s HTTP/1.1\r\nHost: g.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
	handedOff.answer(false)
	busy := dialRaw(t, ln.Addr().String())
	busy.send(get("/s"))
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	resp := busy.answer(false)
	if string(resp.Body()) != "finished" || !resp.ConnectionClose() {
		t.Fatalf("the call in flight: %q close=%v", resp.Body(), resp.ConnectionClose())
	}
	for _, c := range []*rawClient{idle, handedOff, busy} {
		if _, err := c.br.ReadByte(); err != io.EOF {
			t.Fatalf("after shutdown a connection reads %v, want EOF", err)
		}
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	if n := open.Load(); n != 0 {
		t.Fatalf("ConnState counts %d connections open after shutdown, want 0", n)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("something still listens after shutdown")
	}
}

func TestLoopManyClientsAtOnce(t *testing.T) {
	be := lineEchoBackend(t)
	s := newStateOf().api("g", "e", httpDef("POST", "/e/[n]", "http://"+be, "/[n]"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)
	const clients, calls = 16, 100
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", g.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			var resp fasthttp.Response
			for j := range calls {
				body := fmt.Sprintf("client %d call %d", i, j)
				fmt.Fprintf(c, "POST /e/%d HTTP/1.1\r\nHost: g.localhost\r\nContent-Length: %d\r\n\r\n%s", j, len(body), body)
				if err := resp.Read(br); err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("POST /%d %s", j, body); string(resp.Body()) != want {
					errs <- fmt.Errorf("got %q, want %q", resp.Body(), want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestFraming(t *testing.T) {
	for _, tc := range []struct {
		in      string
		n, want int
	}{
		{"3\r\nabc\r\n0\r\n\r\n", 13, frameWhole},
		{"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\nnext", 31, frameWhole},
		{"A\r\n0123456789\r\n0\r\n\r\n", 20, frameWhole},
		{"3\r\nabc\r\n0\r\n", 0, frameMore},
		{"3\r\nab", 0, frameMore},
		{"3\r\nabcd\r\n", 0, frameOther},
		{"zz\r\n", 0, frameOther},
	} {
		if n, v := frameChunks([]byte(tc.in)); n != tc.n || v != tc.want {
			t.Errorf("frameChunks(%q) = %d, %d; want %d, %d", tc.in, n, v, tc.n, tc.want)
		}
	}
	for _, tc := range []struct {
		in      string
		n, want int
	}{
		{"GET / HTTP/1.1\r\n\r\n", 18, frameWhole},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0, frameMore},
		{"GET / HTTP/1.1\nHost: a\n\n", 0, frameOther},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("x", 64) + "\r\n\r\n", 0, frameOther},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("x", 64), 0, frameOther},
	} {
		if n, v := headerEnd([]byte(tc.in), 64); n != tc.n || v != tc.want {
			t.Errorf("headerEnd(%.30q) = %d, %d; want %d, %d", tc.in, n, v, tc.n, tc.want)
		}
	}
}

// BenchmarkServeLoopback: one request and its answer over a loopback connection, the
// event loop against fasthttp's server (a goroutine per connection), both on the
// poller, with a mock backend and with an http one. Run with -cpu 1, as a worker
// runs: go test -run '^$' -bench ServeLoopback -cpu 1 ./proxy/
func BenchmarkServeLoopback(b *testing.B) {
	addr := startBackend(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	s := newStateOf().api("g", "mock", mockDef("GET", "/mock", `{"ok":true}`), fsm.StageRelease).
		api("g", "http", httpDef("GET", "/http", "http://"+addr, "/"), fsm.StageRelease).s
	for _, mode := range []struct {
		name string
		loop bool
	}{{"loop", true}, {"goroutines", false}} {
		for _, path := range []string{"/mock", "/http"} {
			b.Run(mode.name+path, func(b *testing.B) {
				p, err := New(Config{EventLoop: mode.loop})
				if err != nil {
					b.Fatal(err)
				}
				p.Update(s)
				ln := listen(b)
				go func() { _ = p.Serve(NewPollListener(ln)) }()
				defer func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					_ = p.Shutdown(ctx)
				}()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				req := []byte("GET " + path + " HTTP/1.1\r\nHost: g.localhost\r\n\r\n")
				buf := make([]byte, 4096)
				for b.Loop() {
					if _, err := c.Write(req); err != nil {
						b.Fatal(err)
					}
					if readAnswerInto(b, c, buf) != 200 {
						b.Fatal("not 200")
					}
				}
			})
		}
	}
}

// readAnswerInto reads one Content-Length answer into buf without allocating and
// returns its status.
func readAnswerInto(t testing.TB, c net.Conn, buf []byte) int {
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
		end := bytes.Index(buf[:n], crlfCrlf)
		if end < 0 {
			continue
		}
		i := bytes.Index(buf[:end], []byte("\r\nContent-Length: "))
		if i < 0 {
			t.Fatalf("no Content-Length in %q", buf[:end])
		}
		length := 0
		for _, d := range buf[i+len("\r\nContent-Length: ") : end+2] {
			if d < '0' || d > '9' {
				break
			}
			length = length*10 + int(d-'0')
		}
		if n == end+4+length {
			return int(buf[9]-'0')*100 + int(buf[10]-'0')*10 + int(buf[11]-'0')
		}
		if n > end+4+length {
			t.Fatalf("more than one answer: %q", buf[:n])
		}
	}
}

// TestLoopKeepingItsPParksWhenIdle: a loop that waits for events in the kernel while
// busy (Config.LoopKeepsP) still parks once they stop, so an idle process sleeps. A
// loop that went on waiting a millisecond at a time woke ~600 times in these 500 ms
// (measured with the park taken out); the parked process ~120 (the runtime's monitor
// and the deadline sweeper, as the connection is open).
func TestLoopKeepingItsPParksWhenIdle(t *testing.T) {
	be := lineEchoBackend(t)
	s := newStateOf().api("g", "e", httpDef("POST", "/e/[n]", "http://"+be, "/[n]"), fsm.StageRelease).s
	g := loopGateway(t, Config{LoopKeepsP: true}, s)
	c := dialRaw(t, g.addr)
	for i := range 200 {
		c.send(fmt.Sprintf("POST /e/%d HTTP/1.1\r\nHost: g.localhost\r\nContent-Length: 2\r\n\r\nhi", i))
		if resp := c.answer(false); resp.StatusCode() != 200 {
			t.Fatalf("call %d: %d %s", i, resp.StatusCode(), resp.Body())
		}
	}
	time.Sleep(100 * time.Millisecond) // the connection stays open, idle
	before := processUsage(t)
	time.Sleep(500 * time.Millisecond)
	after := processUsage(t)
	if sleeps := after.Nvcsw - before.Nvcsw; sleeps > 300 {
		t.Fatalf("the idle process went to sleep %d times in 500ms: the loop waits in turns instead of parking", sleeps)
	}
}

// processUsage returns the test process's resource use so far.
func processUsage(t *testing.T) syscall.Rusage {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru
}

// TestLoopKeepingItsPLetsCallsOffTheLoopRun: a call the loop serves from a goroutine
// (here a dial on every call, the backend closing each connection) waits on the
// runtime's netpoller and scheduler, and a goroutine whose socket is the poller's (a
// client here, an accept, a connection handed to fasthttp's server) waits for the
// loop to let it run. A loop holding its only P between batches kept both waiting
// until it parked, a millisecond or more per call: 40 calls on one connection took
// 50 ms against 3 without holding, with either rule of gatherEvents taken out (no hold
// while calls are off the loop; a yield when a batch woke a goroutine), and on a new
// connection each, 103 ms against 5 without the yield. With one P, the same
// sequential calls take about as long with Config.LoopKeepsP as without it.
func TestLoopKeepingItsPLetsCallsOffTheLoopRun(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	be := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetConnectionClose()
		ctx.WriteString("ok")
	})
	s := newStateOf().api("g", "e", httpDef("GET", "/e", "http://"+be, "/e"), fsm.StageRelease).s
	const calls = 40
	// The client's sockets are the poller's too, as an outside client's would not wait
	// on the runtime's netpoller: only the calls' own goroutines, the gateway's accept
	// and the in-process backend do.
	dial := func(addr string) *rawClient {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		c := &rawClient{t: t, c: pollDial(nc)}
		c.br = bufio.NewReader(c.c)
		return c
	}
	// timeCalls makes the calls on one connection, or each on a new one (an accept).
	timeCalls := func(keep, newConns bool) time.Duration {
		g := loopGateway(t, Config{LoopKeepsP: keep}, s)
		c := dial(g.addr)
		c.send(get("/e")) // the first dial, and the pool's first connection, untimed
		c.answer(false)
		start := time.Now()
		for i := range calls {
			if newConns {
				c = dial(g.addr)
			}
			c.send(get("/e"))
			if resp := c.answer(false); resp.StatusCode() != 200 {
				t.Fatalf("keep %v call %d: %d %s", keep, i, resp.StatusCode(), resp.Body())
			}
		}
		return time.Since(start)
	}
	for _, newConns := range []bool{false, true} {
		without := timeCalls(false, newConns)
		with := timeCalls(true, newConns)
		t.Logf("%d calls that each dial, new connections %v, one P: %v without LoopKeepsP, %v with", calls, newConns, without, with)
		if with > 2*without+20*time.Millisecond {
			t.Fatalf("%d calls that each dial (new connections %v) took %v with LoopKeepsP, %v without", calls, newConns, with, without)
		}
	}
}
