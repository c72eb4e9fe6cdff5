//go:build !race

package proxy

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/ratelimit"
	"github.com/tollgate/tollgate/signature"
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

// reqsAllocs runs the Handler once per request of reqs (each used once: signed requests
// carry a nonce the gateway accepts only once) and returns allocations per request.
func reqsAllocs(t *testing.T, p *Proxy, reqs []*fasthttp.Request) float64 {
	t.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Init(reqs[0], &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	i := 0
	run := func() {
		reqs[i].CopyTo(&ctx.Request)
		i++
		ctx.Response.Reset()
		p.Handler(&ctx)
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("%s: %d %s %s", ctx.Request.URI(), ctx.Response.StatusCode(),
				ctx.Response.Header.Peek("X-Ca-Error-Code"), ctx.Response.Header.Peek("X-Ca-Error-Message"))
		}
	}
	for j := 0; j < 10; j++ { // warm pools and buffers
		run()
	}
	return testing.AllocsPerRun(len(reqs)-11, run)
}

// signedReqs returns n requests signed by sg, each with its own nonce.
func signedReqs(n int, sg *signature.Signer, host, uri string, headers ...string) []*fasthttp.Request {
	reqs := make([]*fasthttp.Request, n)
	for i := range reqs {
		r := &fasthttp.Request{}
		r.Header.SetMethod("GET")
		r.SetRequestURI(uri)
		r.Header.SetHost(host)
		for j := 0; j+1 < len(headers); j += 2 {
			r.Header.Set(headers[j], headers[j+1])
		}
		if sg != nil {
			sg.Sign(r)
		}
		reqs[i] = r
	}
	return reqs
}

// TestZeroAllocSecured: an app-signed call with its grant check, and one that also
// verifies and maps five parameters, fills system parameters and signs the backend
// call, allocate nothing per request.
func TestZeroAllocSecured(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	signed := httpDef("GET", "/signed/[id]", "http://"+addr, "/v2/[id]")
	signed.Auth = fsm.AuthApp
	st := newStateOf().
		api("g", "signed", signed, fsm.StageRelease).
		api("g", "five", fiveParamsDef("http://"+addr, "k1"), fsm.StageRelease).
		api("g", "code", func() fsm.APIDef { d := signed; d.Path = "/code/[id]"; d.Auth = fsm.AuthAppCode; return d }(), fsm.StageRelease).
		app("mobile", "AK1", "CODE1", "secret-new", "secret-old").
		grant("mobile", "g/signed", nil, fsm.StageRelease).
		grant("mobile", "g/code", nil, fsm.StageRelease).
		grant("mobile", "g/five", nil, fsm.StageRelease).
		backendKey("k1", "BK1", "backend-secret")
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
	sg := signature.NewSigner("AK1", "secret-old")
	sg.Headers = []string{"X-D"}
	cases := []struct {
		name string
		reqs []*fasthttp.Request
	}{
		{"signed with grant", signedReqs(600, sg, "g.localhost", "/signed/42?x=1")},
		{"appcode with grant", signedReqs(600, nil, "g.localhost", "/code/42?x=1", "Authorization", "APPCODE CODE1")},
		{"signed, five params, backend signature", signedReqs(600, sg, "g.localhost", "/five/abc?b=7&c=up&junk=1", "X-D", "hello", "X-E", "true", "X-Junk", "1")},
	}
	for _, c := range cases {
		if n := reqsAllocs(t, p, c.reqs); n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", c.name, n)
		}
	}
}

// TestZeroAllocThrottled: a quota check per API, app and user on every call, and the
// default-subdomain cap, allocate nothing.
func TestZeroAllocThrottled(t *testing.T) {
	lim, err := ratelimit.New(ratelimit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := lim.SetPolicies([]ratelimit.Policy{
		{Name: "p", Window: ratelimit.Day, API: 1 << 40, User: 1 << 39, App: 1 << 38},
		{Name: SubdomainPolicy, Window: ratelimit.Day, API: 1 << 40},
	}); err != nil {
		t.Fatal(err)
	}
	lim.Start()
	defer lim.Close()
	open := mockDef("GET", "/open", "ok")
	open.Traffic = "p"
	signed := mockDef("GET", "/signed", "ok")
	signed.Traffic, signed.Auth = "p", fsm.AuthAppCode
	st := newStateOf().
		api("g", "open", open, fsm.StageRelease).
		api("g", "signed", signed, fsm.StageRelease).
		app("a1", "AK-1", "CODE-1", "secret-1").
		grant("a1", "g/signed", nil, fsm.StageRelease)
	p, err := New(Config{Registerer: prometheus.NewRegistry(), NodeID: "alloc", Limiter: lim, SubdomainDailyLimit: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(st.s)
	if a := handlerAllocs(t, p, "g.localhost", "/open"); a != 0 {
		t.Errorf("API quota + subdomain cap: %.1f allocs per request", a)
	}
	if a := handlerAllocs(t, p, "g.localhost", "/signed", "Authorization", "APPCODE CODE-1"); a != 0 {
		t.Errorf("API, app and user quotas: %.1f allocs per request", a)
	}
}
