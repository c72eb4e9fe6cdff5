package proxy

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// manyAPIs returns a state whose group "g" has n mock APIs deployed to RELEASE, with a
// mix of static and parameter paths like real APIs: /svcI/items/[id] and /svcI/health.
func manyAPIs(n int) *fsm.State {
	st := newStateOf().group("g")
	for i := 0; i < n; i++ {
		path := fmt.Sprintf("/svc%d/items/[id]", i/2)
		if i%2 == 1 {
			path = fmt.Sprintf("/svc%d/health", i/2)
		}
		st.api("g", fmt.Sprintf("api%d", i), mockDef("GET", path, "ok"), fsm.StageRelease)
	}
	return st.s
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("apis=%d", n), func(b *testing.B) {
			p, err := New(Config{})
			if err != nil {
				b.Fatal(err)
			}
			p.Update(manyAPIs(n))
			g := p.table.Load().hosts["g.localhost"]
			path := []byte(fmt.Sprintf("/svc%d/items/12345", n/4))
			var ps params
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r, _ := g.stages[2].lookup(0, path, &ps); r == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

// BenchmarkHandler runs the whole handler on a pre-built RequestCtx: the pipeline's
// own cost, without the HTTP parsing and writing of a connection.
func BenchmarkHandler(b *testing.B) {
	addr := startBackend(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	st := newStateOf().
		api("g", "mock", mockDef("GET", "/mock/[id]", `{"ok":true}`), fsm.StageRelease).
		api("g", "http", httpDef("GET", "/http/[id]", "http://"+addr, "/v2/[id]"), fsm.StageRelease)
	p, err := New(Config{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	p.Update(st.s)
	for _, uri := range []string{"/mock/1", "/http/1"} {
		b.Run(uri[1:5], func(b *testing.B) {
			var tmpl fasthttp.Request
			tmpl.SetRequestURI(uri)
			tmpl.Header.SetHost("g.localhost")
			var ctx fasthttp.RequestCtx
			ctx.Init(&tmpl, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tmpl.CopyTo(&ctx.Request)
				ctx.Response.Reset()
				p.Handler(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatal(ctx.Response.StatusCode())
				}
			}
		})
	}
}

// BenchmarkServeInmemory drives a served Proxy over fasthttputil's in-memory listener
// with parallel keep-alive clients: parsing, the pipeline and writing the answer.
func BenchmarkServeInmemory(b *testing.B) {
	addr := startBackend(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	st := newStateOf().
		api("g", "mock", mockDef("GET", "/mock/[id]", `{"ok":true}`), fsm.StageRelease).
		api("g", "http", httpDef("GET", "/http/[id]", "http://"+addr, "/v2/[id]"), fsm.StageRelease)
	p, err := New(Config{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	p.Update(st.s)
	ln := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { _ = p.Serve(ln); close(done) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
		<-done
	}()
	client := &fasthttp.HostClient{Addr: "g.localhost", Dial: func(string) (net.Conn, error) { return ln.Dial() }, MaxConns: 64}
	defer client.CloseIdleConnections()
	for _, uri := range []string{"/mock/1", "/http/1"} {
		b.Run(uri[1:5], func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI("http://g.localhost" + uri)
				for pb.Next() {
					if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
						b.Errorf("%v %d", err, resp.StatusCode())
						return
					}
				}
			})
		})
	}
}

// compiledHeap returns the heap the table for st adds, in bytes, and how long the
// compile took.
func compiledHeap(tb testing.TB, reg prometheus.Registerer, st *fsm.State) (uint64, time.Duration) {
	p, err := New(Config{Registerer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	p.Update(st)
	el := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	return after.HeapAlloc - before.HeapAlloc, el
}

// TestMemoryPer10kAPIs reports what a 10,000-API group costs in the compiled table (the
// fsm.State itself not counted), with and without metrics children.
func TestMemoryPer10kAPIs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10,000-API state")
	}
	st := manyAPIs(10000)
	bare, d1 := compiledHeap(t, nil, st)
	withMetrics, d2 := compiledHeap(t, prometheus.NewRegistry(), st)
	t.Logf("10,000 APIs: table %.1f MiB (compile %v); with metrics children %.1f MiB (compile %v)",
		float64(bare)/(1<<20), d1.Round(time.Millisecond), float64(withMetrics)/(1<<20), d2.Round(time.Millisecond))
	if bare > 64<<20 {
		t.Errorf("10,000 APIs take %d MiB in the table; something is retained per route", bare>>20)
	}
}

func BenchmarkCompile10k(b *testing.B) {
	st := manyAPIs(10000)
	p, err := New(Config{Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	p.Update(st) // first compile; the loop measures the steady state after an apply
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Index++
		p.Update(st)
	}
}
