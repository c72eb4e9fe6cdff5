//go:build !race

package proxy

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
)

// handlerAllocs runs the whole Handler on a pre-built RequestCtx (reset per run, as
// fasthttp's server does between requests) and returns allocations per request.
func handlerAllocs(t *testing.T, p *Proxy, host, uri string, headers ...string) float64 {
	t.Helper()
	var tmpl fasthttp.Request
	tmpl.Header.SetMethod("GET")
	tmpl.SetRequestURI(uri)
	tmpl.Header.SetHost(host)
	for i := 0; i+1 < len(headers); i += 2 {
		tmpl.Header.Set(headers[i], headers[i+1])
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&tmpl, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	run := func() {
		tmpl.CopyTo(&ctx.Request)
		ctx.Response.Reset()
		p.Handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("%s%s: %d %s %s", host, uri, ctx.Response.StatusCode(),
				ctx.Response.Header.Peek("X-Ca-Error-Code"), ctx.Response.Body())
		}
	}
	for i := 0; i < 10; i++ { // warm pools and buffers
		run()
	}
	return testing.AllocsPerRun(500, run)
}

func TestZeroAllocHandler(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	st := newStateOf().
		api("g", "mock", mockDef("GET", "/mock/[id]", `{"ok":true}`), fsm.StageRelease, fsm.StageTest).
		api("g", "http", httpDef("GET", "/http/[id]", "http://"+addr, "/v2/[id]"), fsm.StageRelease)
	p, err := New(Config{Registerer: prometheus.NewRegistry(), NodeID: "alloc"})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(st.s)
	t.Cleanup(func() {
		for _, c := range p.clients {
			c.CloseIdleConnections()
		}
	})

	cases := []struct {
		name, uri string
		headers   []string
	}{
		{"mock", "/mock/42?x=1", nil},
		{"mock TEST stage", "/mock/42", []string{"X-Ca-Stage", "TEST"}},
		{"http backend", "/http/s%C3%A3o?x=1", []string{"Connection", "X-Hop", "X-Hop", "1", "X-Forwarded-For", "10.0.0.1"}},
	}
	for _, c := range cases {
		if n := handlerAllocs(t, p, "G.localhost:8080", c.uri, c.headers...); n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", c.name, n)
		}
	}
}

func TestZeroAllocLookup(t *testing.T) {
	r := testRouter(t, "GET /a/[b]/c", "GET /a/x/d", "ANY /z/[y]")
	path := []byte("/a/x/c")
	var ps params
	n := testing.AllocsPerRun(1000, func() {
		if rt, _ := r.lookup(0, path, &ps); rt == nil {
			t.Fatal("no match")
		}
	})
	if n != 0 {
		t.Errorf("lookup: %v allocations, want 0", n)
	}
}
