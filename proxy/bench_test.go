package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
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

// unsignedNonceReq returns a request signed by sg whose X-Ca-Nonce is left out of the
// signed headers (a client may choose what it signs beyond the path), so a benchmark
// can send a fresh nonce each iteration without signing again: the gateway still
// checks and records every nonce.
func unsignedNonceReq(tb testing.TB, sg *signature.Signer, secret, uri string, headers ...string) *fasthttp.Request {
	r := &fasthttp.Request{}
	r.Header.SetMethod("GET")
	r.SetRequestURI(uri)
	r.Header.SetHost("g.localhost")
	for j := 0; j+1 < len(headers); j += 2 {
		r.Header.Set(headers[j], headers[j+1])
	}
	sg.Sign(r)
	names := strings.ReplaceAll(string(r.Header.Peek("X-Ca-Signature-Headers")), "x-ca-nonce,", "")
	r.Header.Set("X-Ca-Signature-Headers", names)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(signature.AppendStringToSign(nil, r))
	r.Header.Set("X-Ca-Signature", base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return r
}

// BenchmarkSecured compares, on the same http backend, an anonymous pass-through, an
// app-signed call (HmacSHA256, nonce, grant), and an app-signed call with five verified
// and mapped parameters, system parameters and a backend signature.
func BenchmarkSecured(b *testing.B) {
	addr := startBackend(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	anon := httpDef("GET", "/anon/[id]", "http://"+addr, "/v2/[id]")
	signed := anon
	signed.Path, signed.Auth = "/signed/[id]", fsm.AuthApp
	st := newStateOf().
		api("g", "anon", anon, fsm.StageRelease).
		api("g", "signed", signed, fsm.StageRelease).
		api("g", "five", fiveParamsDef("http://"+addr, "k1"), fsm.StageRelease).
		app("mobile", "AK1", "CODE1", "secret-1").
		grant("mobile", "g/signed", nil, fsm.StageRelease).
		grant("mobile", "g/five", nil, fsm.StageRelease).
		backendKey("k1", "BK1", "backend-secret")
	p, err := New(Config{Registerer: prometheus.NewRegistry(), NonceCapacity: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	p.Update(st.s)
	sg := signature.NewSigner("AK1", "secret-1")
	cases := []struct {
		name string
		req  *fasthttp.Request
	}{
		{"anonymous", func() *fasthttp.Request {
			r := &fasthttp.Request{}
			r.SetRequestURI("/anon/1")
			r.Header.SetHost("g.localhost")
			return r
		}()},
		{"signed", unsignedNonceReq(b, sg, "secret-1", "/signed/1")},
		{"signed+5params+backendsig", unsignedNonceReq(b, sg, "secret-1", "/five/abc?b=7&c=up", "X-D", "hello", "X-E", "true")},
	}
	seq := 0 // nonces stay unique across the benchmark's repeated runs
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ctx.Init(c.req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
			nonce := make([]byte, 0, 32)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seq++
				nonce = strconv.AppendInt(append(nonce[:0], "n-"...), int64(seq), 10)
				c.req.Header.SetBytesV("X-Ca-Nonce", nonce)
				c.req.CopyTo(&ctx.Request)
				ctx.Response.Reset()
				p.Handler(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("%d %s %s", ctx.Response.StatusCode(), ctx.Response.Header.Peek("X-Ca-Error-Code"), ctx.Response.Header.Peek("X-Ca-Error-Message"))
				}
			}
		})
	}
}
