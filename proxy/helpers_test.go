package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
)

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
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s != nil {
		p.Update(s)
	}
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	g := &testGateway{p: p, addr: ln.Addr().String(), reg: reg,
		client: &fasthttp.HostClient{Addr: ln.Addr().String(), ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxConns: 64,
			DisablePathNormalizing: true}} // send test paths byte for byte
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

// call sends one request through the gateway. host names the group; headers are
// name/value pairs.
func (g *testGateway) call(t testing.TB, method, host, uri string, body []byte, headers ...string) result {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
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
	if err := g.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s%s: %v", method, host, uri, err)
	}
	r := result{status: resp.StatusCode(), body: string(resp.Body()), hdr: map[string]string{}}
	for k, v := range resp.Header.All() {
		r.hdr[string(k)] = string(v)
	}
	if len(r.hdr["X-Ca-Request-Id"]) != requestIDLen {
		t.Errorf("%s %s%s: no request id in %v", method, host, uri, r.hdr)
	}
	return r
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
