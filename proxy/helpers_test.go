package proxy

import (
	"context"
	"maps"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

// eventLoopUnderTest serves every gateway startProxy starts through the event loop
// (Config.EventLoop, on a poller listener): `make test` runs this package a second
// time with TOLLGATE_TEST_EVENT_LOOP=1, so every test here holds for both paths. The
// loop keeps its P there (Config.LoopKeepsP), as a worker's does.
var eventLoopUnderTest = os.Getenv("TOLLGATE_TEST_EVENT_LOOP") == "1"

// stateOf builds fsm states for tests the way the FSM would hold them.
type stateOf struct{ s *fsm.State }

func newStateOf() *stateOf { return &stateOf{s: fsm.NewState()} }

func (b *stateOf) group(name string, domains ...string) *stateOf {
	b.s.Groups[name] = fsm.Group{Name: name, Domains: domains}
	return b
}

// api adds (or redefines) an API and deploys the definition as a new version to each
// stage given.
func (b *stateOf) api(group, name string, def fsm.APIDef, stages ...fsm.Stage) *stateOf {
	if _, ok := b.s.Groups[group]; !ok {
		b.group(group)
	}
	ref := fsm.APIRef(group, name)
	b.s.APIs[ref] = fsm.API{Group: group, Name: name, Def: def}
	for _, st := range stages {
		key := fsm.DeploymentKey(ref, st)
		d := b.s.Deployments[key]
		d.API, d.Stage = ref, st
		d.Versions = append(append([]fsm.Version(nil), d.Versions...), fsm.Version{Number: len(d.Versions) + 1, Def: def, DeployedAt: time.Now()})
		d.Current = len(d.Versions)
		b.s.Deployments[key] = d
	}
	b.s.Index++
	return b
}

func mockDef(method, path, body string) fsm.APIDef {
	return fsm.APIDef{Method: method, Path: path, Auth: fsm.AuthAnonymous,
		Backend: fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: body}}
}

func httpDef(method, path, url, backendPath string) fsm.APIDef {
	return fsm.APIDef{Method: method, Path: path, Auth: fsm.AuthAnonymous,
		Backend: fsm.Backend{Type: fsm.BackendHTTP, URL: url, Path: backendPath}}
}

// listen opens a kernel socket on loopback.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startBackend runs a real fasthttp server on 127.0.0.1 and stops it at cleanup.
func startBackend(t testing.TB, h fasthttp.RequestHandler) string {
	t.Helper()
	ln := listen(t)
	s := &fasthttp.Server{Handler: h, Name: "backend"}
	done := make(chan struct{})
	go func() { _ = s.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.ShutdownWithContext(ctx)
		<-done
	})
	return ln.Addr().String()
}

type testGateway struct {
	p      *Proxy
	addr   string
	client *fasthttp.HostClient
	reg    *prometheus.Registry
}

// startProxy runs a Proxy on a loopback socket with cfg and a fresh registry, loaded
// with s, and shuts it down at cleanup.
func startProxy(t testing.TB, cfg Config, s *fsm.State) *testGateway {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Registerer == nil {
		cfg.Registerer = reg
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "test-node"
	}
	if eventLoopUnderTest {
		cfg.EventLoop, cfg.LoopKeepsP = true, true
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s != nil {
		p.Update(s)
	}
	var ln net.Listener = listen(t)
	addr := ln.Addr().String()
	if cfg.EventLoop {
		ln = NewPollListener(ln)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	g := &testGateway{p: p, addr: addr, reg: reg,
		client: &fasthttp.HostClient{Addr: addr, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxConns: 64,
			ReadBufferSize:         64 << 10, // reads any answer the gateway may give
			DisablePathNormalizing: true}}    // send test paths byte for byte
	t.Cleanup(func() {
		g.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
	})
	return g
}

type result struct {
	status int
	body   string
	hdr    map[string]string
}

func (r result) code() string { return r.hdr["X-Ca-Error-Code"] }

// call sends one unsigned request through the gateway. host names the group; headers
// are name/value pairs.
func (g *testGateway) call(t testing.TB, method, host, uri string, body []byte, headers ...string) result {
	t.Helper()
	return g.signedCall(t, nil, method, host, uri, body, nil, headers...)
}

func wantError(t *testing.T, r result, e *ErrorCode) {
	t.Helper()
	if r.status != e.Status || r.code() != e.Code {
		t.Fatalf("got %d %q (%s), want %d %s", r.status, r.code(), r.body, e.Status, e.Code)
	}
	if r.hdr["X-Ca-Error-Message"] == "" {
		t.Fatalf("no X-Ca-Error-Message: %v", r.hdr)
	}
}

// app adds an app with its key, code and live secrets (newest first).
func (b *stateOf) app(name, key, code string, secrets ...string) *stateOf {
	b.s.Apps[name] = fsm.App{Name: name, Owner: "owner-" + name, Key: key, Code: code, Secrets: secrets}
	b.s.Index++
	return b
}

// grant grants app the API ref in stages, until expires (nil: never).
func (b *stateOf) grant(app, ref string, expires *time.Time, stages ...fsm.Stage) *stateOf {
	b.s.Grants[fsm.GrantKey(app, ref)] = fsm.GrantSpec{App: app, API: ref, Stages: stages, Expires: expires}
	b.s.Index++
	return b
}

func (b *stateOf) backendKey(name, key, secret string) *stateOf {
	b.s.BackendKeys[name] = fsm.BackendKey{Name: name, Key: key, Secret: secret}
	b.s.Index++
	return b
}

// copyState returns a copy of b's state whose maps can change without touching b's,
// as the FSM publishes a new state per commit.
func (b *stateOf) copyState() *stateOf {
	s := *b.s
	s.Groups = maps.Clone(b.s.Groups)
	s.APIs = maps.Clone(b.s.APIs)
	s.Deployments = maps.Clone(b.s.Deployments)
	s.Apps = maps.Clone(b.s.Apps)
	s.Grants = maps.Clone(b.s.Grants)
	s.BackendKeys = maps.Clone(b.s.BackendKeys)
	s.IPPolicies = maps.Clone(b.s.IPPolicies)
	return &stateOf{s: &s}
}

// signedCall sends a request signed by sg (after headers and body are set); prepare,
// if not nil, may change the request after signing (to tamper with it).
func (g *testGateway) signedCall(t testing.TB, sg *signature.Signer, method, host, uri string, body []byte, prepare func(*fasthttp.Request), headers ...string) result {
	t.Helper()
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(method)
	req.SetRequestURI(uri)
	req.Header.SetHost(host)
	req.UseHostHeader = true
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	if body != nil {
		req.SetBody(body)
	}
	if sg != nil {
		sg.Sign(req)
	}
	if prepare != nil {
		prepare(req)
	}
	return g.do(t, req)
}

// do sends req and collects the answer.
func (g *testGateway) do(t testing.TB, req *fasthttp.Request) result {
	t.Helper()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := g.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", req.Header.Method(), req.URI(), err)
	}
	r := result{status: resp.StatusCode(), body: string(resp.Body()), hdr: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.hdr[string(k)] = string(v)
	}
	if len(r.hdr["X-Ca-Request-Id"]) != requestIDLen {
		t.Errorf("%s %s: no request id in %v", req.Header.Method(), req.URI(), r.hdr)
	}
	return r
}

// wantErrorMessage is wantError that also checks X-Ca-Error-Message exactly.
func wantErrorMessage(t *testing.T, r result, e *ErrorCode, msg string) {
	t.Helper()
	wantError(t, r, e)
	if got := r.hdr["X-Ca-Error-Message"]; got != msg {
		t.Fatalf("%s: message %q, want %q", e.Code, got, msg)
	}
}

// fiveParamsDef is an app-signed API with five verified parameters (path, two query,
// two header), three of them mapped elsewhere, a constant, system parameters and a
// backend signature with key (empty: none).
func fiveParamsDef(url, key string) fsm.APIDef {
	minB, maxB, maxD := 1.0, 100.0, 16
	return fsm.APIDef{Method: "GET", Path: "/five/[a]", Auth: fsm.AuthApp,
		Params: []fsm.Param{
			{Name: "a", In: fsm.InPath, Type: "string", Required: true, Regex: "^[a-z]+$"},
			{Name: "b", In: fsm.InQuery, Type: "int", Min: &minB, Max: &maxB, Required: true},
			{Name: "c", In: fsm.InQuery, Type: "string", Enum: []string{"up", "down"}},
			{Name: "X-D", In: fsm.InHeader, Type: "string", MaxLength: &maxD},
			{Name: "X-E", In: fsm.InHeader, Type: "boolean"},
		},
		Backend: fsm.Backend{Type: fsm.BackendHTTP, URL: url, Path: "/v1/[a]", Signature: key,
			Map: []fsm.ParamMapping{
				{Param: "b", In: fsm.InHeader, Name: "X-B"},
				{Param: "c", In: fsm.InQuery, Name: "cc"},
				{Param: "X-E", In: fsm.InQuery, Name: "e"},
			},
			Constants: []fsm.ConstantParam{{Name: "X-Source", In: fsm.InHeader, Value: "tollgate"}},
			System: []fsm.SystemParam{
				{Param: "CaClientIp", In: fsm.InHeader, Name: "X-Client-Ip"},
				{Param: "CaAppId", In: fsm.InHeader, Name: "X-App"},
				{Param: "CaRequestId", In: fsm.InQuery, Name: "rid"},
			}}}
}
