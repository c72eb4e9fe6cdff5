package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
)

// seen is what a backend received.
type seen struct {
	method, uri, host string
	body              string
	hdr               map[string]string
}

func recordingBackend(t *testing.T, answer func(ctx *fasthttp.RequestCtx)) (string, chan seen) {
	ch := make(chan seen, 16)
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		s := seen{method: string(ctx.Method()), uri: string(ctx.RequestURI()), host: string(ctx.Host()),
			body: string(ctx.PostBody()), hdr: map[string]string{}}
		for k, v := range ctx.Request.Header.All() {
			s.hdr[string(k)] = string(v)
		}
		ch <- s
		if answer != nil {
			answer(ctx)
		}
	})
	return addr, ch
}

func TestForwardHTTP(t *testing.T) {
	addr, got := recordingBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Backend", "yes")
		ctx.Response.Header.Set("Keep-Alive", "timeout=5")
		ctx.Response.Header.Set("Proxy-Authenticate", "Basic")
		ctx.Response.Header.Set("X-Hop", "drop me")
		ctx.Response.Header.Set("Connection", "X-Hop")
		ctx.SetStatusCode(201)
		ctx.SetBodyString("from backend")
	})
	st := newStateOf().
		api("weather", "city", httpDef("POST", "/cities/[city]/days/[n]", "http://"+addr+"/base", "/v2/[city]/forecast/[n]"), fsm.StageRelease)
	g := startProxy(t, Config{}, st.s)

	r := g.call(t, "POST", "weather.localhost", "/cities/s%C3%A3o%20paulo/days/3?unit=c&q=a%26b", []byte(`{"x":1}`),
		"X-Custom", "kept",
		"Connection", "X-Secret, keep-alive",
		"X-Secret", "hop",
		"Keep-Alive", "timeout=5",
		"Proxy-Authorization", "Basic abc",
		"Te", "trailers",
		"X-Forwarded-For", "203.0.113.7",
		"Content-Type", "application/json",
	)
	if r.status != 201 || r.body != "from backend" || r.hdr["X-Backend"] != "yes" {
		t.Fatalf("response %d %q %v", r.status, r.body, r.hdr)
	}
	for _, h := range []string{"Keep-Alive", "Proxy-Authenticate", "X-Hop", "X-Ca-Error-Code"} {
		if v, ok := r.hdr[h]; ok {
			t.Errorf("response header %s=%q should have been stripped", h, v)
		}
	}
	var b seen
	select {
	case b = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("backend saw nothing")
	}
	if b.method != "POST" || b.body != `{"x":1}` {
		t.Errorf("backend got %s %q", b.method, b.body)
	}
	if want := "/base/v2/s%C3%A3o%20paulo/forecast/3?unit=c&q=a%26b"; b.uri != want {
		t.Errorf("backend uri %q, want %q", b.uri, want)
	}
	if b.host != addr {
		t.Errorf("backend Host %q, want %q", b.host, addr)
	}
	want := map[string]string{
		"X-Custom":          "kept",
		"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "weather.localhost",
		"Content-Type":      "application/json",
	}
	for k, v := range want {
		if b.hdr[k] != v {
			t.Errorf("backend header %s=%q, want %q", k, b.hdr[k], v)
		}
	}
	for _, h := range []string{"Connection", "X-Secret", "Keep-Alive", "Proxy-Authorization", "Te"} {
		if v, ok := b.hdr[h]; ok {
			t.Errorf("backend got hop-by-hop header %s=%q", h, v)
		}
	}
}

func TestForwardMethodOverrideAndSamePath(t *testing.T) {
	addr, got := recordingBackend(t, nil)
	def := httpDef("ANY", "/items/[id]/", "http://"+addr, "")
	st := newStateOf().api("shop", "items", def, fsm.StageRelease)
	def2 := httpDef("GET", "/legacy", "http://"+addr, "/new")
	def2.Backend.Method = "post"
	st.api("shop", "legacy", def2, fsm.StageRelease)
	g := startProxy(t, Config{}, st.s)

	if r := g.call(t, "DELETE", "shop.localhost", "/items/a%2Bb", nil); r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	if b := <-got; b.method != "DELETE" || b.uri != "/items/a%2Bb/" { // the API's own pattern, as written
		t.Errorf("backend got %s %s", b.method, b.uri)
	}
	if r := g.call(t, "GET", "shop.localhost", "/legacy/", nil); r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	if b := <-got; b.method != "POST" || b.uri != "/new" {
		t.Errorf("backend got %s %s, want POST /new", b.method, b.uri)
	}
}

func TestBackendTimeout(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(2 * time.Second)
	})
	def := httpDef("GET", "/slow", "http://"+addr, "/")
	def.Backend.Timeout = fsm.Duration(100 * time.Millisecond)
	g := startProxy(t, Config{}, newStateOf().api("g", "slow", def, fsm.StageRelease).s)
	start := time.Now()
	r := g.call(t, "GET", "g.localhost", "/slow", nil)
	wantError(t, r, ErrBackendTimeout)
	if el := time.Since(start); el > 1500*time.Millisecond { // far below the backend's 2s
		t.Errorf("timeout answer took %v, want about 100ms", el)
	}
}

func TestBackendRefused(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	g := startProxy(t, Config{}, newStateOf().api("g", "gone", httpDef("GET", "/", "http://"+addr, "/"), fsm.StageRelease).s)
	r := g.call(t, "GET", "g.localhost", "/", nil)
	wantError(t, r, ErrBackendUnreachable)
	var body struct{ Code, Message, RequestID string }
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || body.Code != "D502CO" || body.RequestID != r.hdr["X-Ca-Request-Id"] {
		t.Errorf("error body %q (%v)", r.body, err)
	}
}

func TestBackendResponseTooLarge(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBody(make([]byte, 4096)) })
	g := startProxy(t, Config{MaxResponseBodySize: 1024}, newStateOf().api("g", "big", httpDef("GET", "/", "http://"+addr, "/"), fsm.StageRelease).s)
	wantError(t, g.call(t, "GET", "g.localhost", "/", nil), ErrBackendTooLarge)
}

// TestBackendResponseHeaderLimit: a backend response whose headers fit the
// connection's read buffer (16 KiB) passes whole; larger headers answer 502.
func TestBackendResponseHeaderLimit(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		n, _ := strconv.Atoi(string(ctx.QueryArgs().Peek("n")))
		ctx.Response.Header.Set("X-Big", strings.Repeat("h", n))
		ctx.SetBodyString("ok")
	})
	g := startProxy(t, Config{}, newStateOf().api("g", "h", httpDef("GET", "/", "http://"+addr, "/"), fsm.StageRelease).s)
	r := g.call(t, "GET", "g.localhost", "/?n=12000", nil)
	if r.status != 200 || r.body != "ok" || len(r.hdr["X-Big"]) != 12000 {
		t.Fatalf("12,000-byte header: %d %q, header of %d bytes", r.status, r.body, len(r.hdr["X-Big"]))
	}
	wantError(t, g.call(t, "GET", "g.localhost", "/?n=20000", nil), ErrBackendUnreachable)
}

func TestRequestLimits(t *testing.T) {
	g := startProxy(t, Config{MaxBodySize: 1024, MaxHeaderSize: 4096},
		newStateOf().api("g", "echo", mockDef("POST", "/", "ok"), fsm.StageRelease).s)
	if r := g.call(t, "POST", "g.localhost", "/", make([]byte, 1000)); r.status != 200 {
		t.Fatalf("small body: %d %s", r.status, r.body)
	}
	wantError(t, g.call(t, "POST", "g.localhost", "/", make([]byte, 2048)), ErrBodyTooLarge)
	wantError(t, g.call(t, "GET", "g.localhost", "/", nil, "X-Big", strings.Repeat("x", 8000)), ErrURLTooLarge)
	wantError(t, g.call(t, "GET", "g.localhost", "/?q="+strings.Repeat("x", 8000), nil), ErrURLTooLarge)
}

func TestMockBackend(t *testing.T) {
	def := mockDef("GET", "/m", `{"ok":true}`)
	def.Backend.Status = 202
	def.Backend.Headers = map[string]string{"x-mock": "1", "Cache-Control": "no-store"}
	def.Backend.Delay = fsm.Duration(50 * time.Millisecond)
	g := startProxy(t, Config{}, newStateOf().api("g", "m", def, fsm.StageRelease).s)
	start := time.Now()
	r := g.call(t, "GET", "g.localhost", "/m", nil)
	if r.status != 202 || r.body != `{"ok":true}` || r.hdr["X-Mock"] != "1" || r.hdr["Cache-Control"] != "no-store" ||
		!strings.HasPrefix(r.hdr["Content-Type"], "application/json") {
		t.Fatalf("mock answered %d %q %v", r.status, r.body, r.hdr)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("mock delay not applied: %v", el)
	}
}

func TestStageSelection(t *testing.T) {
	st := newStateOf().group("w", "API.Example.com")
	st.api("w", "v", mockDef("GET", "/v", "v1"), fsm.StageTest, fsm.StageRelease)
	st.api("w", "v", mockDef("GET", "/v", "v2"), fsm.StageRelease) // RELEASE now serves version 2
	st.api("w", "draft", mockDef("GET", "/draft", "d"))            // exists, deployed nowhere
	g := startProxy(t, Config{}, st.s)

	for _, c := range []struct{ stage, want string }{{"", "v2"}, {"RELEASE", "v2"}, {"test", "v1"}, {" Test ", "v1"}} {
		var hdr []string
		if c.stage != "" {
			hdr = []string{"X-Ca-Stage", c.stage}
		}
		if r := g.call(t, "GET", "w.localhost", "/v", nil, hdr...); r.status != 200 || r.body != c.want {
			t.Errorf("stage %q: %d %q, want %q", c.stage, r.status, r.body, c.want)
		}
	}
	if r := g.call(t, "GET", "api.example.com:8443", "/v", nil, "X-Ca-Stage", "TEST"); r.body != "v1" {
		t.Errorf("custom domain: %d %q", r.status, r.body)
	}
	wantError(t, g.call(t, "GET", "w.localhost", "/v", nil, "X-Ca-Stage", "PRE"), ErrStageNotDeployed)
	wantError(t, g.call(t, "GET", "w.localhost", "/draft", nil), ErrStageNotDeployed)
	wantError(t, g.call(t, "GET", "w.localhost", "/v", nil, "X-Ca-Stage", "PROD"), ErrInvalidStage)
}

func TestRoutingErrors(t *testing.T) {
	st := newStateOf().api("g", "a", mockDef("GET", "/a", "a"), fsm.StageRelease)
	st.api("g", "signed", fsm.APIDef{Method: "GET", Path: "/signed", Auth: "oauth2",
		Backend: fsm.Backend{Type: fsm.BackendMock, Body: "secret"}}, fsm.StageRelease)
	g := startProxy(t, Config{}, st.s)

	wantError(t, g.call(t, "GET", "g.localhost", "/nope", nil), ErrAPINotFound)
	r := g.call(t, "POST", "g.localhost", "/a", nil)
	wantError(t, r, ErrMethodNotAllowed)
	if r.hdr["Allow"] != "GET" {
		t.Errorf("Allow %q", r.hdr["Allow"])
	}
	r = g.call(t, "GET", "g.localhost", "/signed", nil)
	wantError(t, r, ErrAuthUnsupported)
	if strings.Contains(r.body, "secret") || !strings.Contains(r.hdr["X-Ca-Error-Message"], "oauth2") {
		t.Errorf("unsupported auth answered %q %v", r.body, r.hdr)
	}
	wantError(t, g.call(t, "GET", "other.localhost", "/a", nil), ErrDomainNotFound)
	wantError(t, g.call(t, "GET", "127.0.0.1", "/a", nil), ErrDomainNotFound)

	// A Host naming no group serves the load balancer's checks.
	if r := g.call(t, "GET", "127.0.0.1", "/healthz", nil); r.status != 200 {
		t.Errorf("healthz %d", r.status)
	}
	if r := g.call(t, "GET", "localhost", "/readyz", nil); r.status != 200 {
		t.Errorf("readyz %d", r.status)
	}
	if r := g.call(t, "GET", "g.localhost", "/healthz", nil); r.status != 404 {
		t.Errorf("a group's host must not serve healthz: %d", r.status)
	}
}

func TestReadyz(t *testing.T) {
	var ready bool
	var mu sync.Mutex
	g := startProxy(t, Config{Ready: func() bool { mu.Lock(); defer mu.Unlock(); return ready }}, nil)
	if r := g.call(t, "GET", "localhost", "/readyz", nil); r.status != 503 {
		t.Errorf("not ready: %d", r.status)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	if r := g.call(t, "GET", "localhost", "/readyz", nil); r.status != 200 {
		t.Errorf("ready: %d", r.status)
	}
}

func TestRequestIDs(t *testing.T) {
	g := startProxy(t, Config{NodeID: "n1"}, newStateOf().api("g", "a", mockDef("GET", "/a", "a"), fsm.StageRelease).s)
	ids := map[string]bool{}
	for i := 0; i < 200; i++ {
		host, path := "g.localhost", "/a"
		if i%2 == 1 {
			path = "/missing"
		}
		id := g.call(t, "GET", host, path, nil).hdr["X-Ca-Request-Id"]
		if ids[id] {
			t.Fatalf("request id %s repeated", id)
		}
		ids[id] = true
		parts := strings.Split(id, "-")
		if len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 || len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
			t.Fatalf("request id %q is not UUID-shaped", id)
		}
	}
}

func TestErrorTable(t *testing.T) {
	codes := map[string]bool{}
	for _, e := range Errors() {
		if codes[e.Code] {
			t.Errorf("code %s used twice", e.Code)
		}
		codes[e.Code] = true
		if !strings.ContainsRune("ATIDBX", rune(e.Code[0])) || e.Message == "" || e.Use == "" {
			t.Errorf("malformed row %+v", e)
		}
		for _, c := range e.Code[4:] {
			if c < 'A' || c > 'Z' {
				t.Errorf("%s: last two must be capital letters", e.Code)
			}
		}
	}
	for _, must := range []*ErrorCode{ErrAPINotFound, ErrStageNotDeployed, ErrDomainNotFound, ErrMethodNotAllowed,
		ErrInvalidStage, ErrBodyTooLarge, ErrURLTooLarge, ErrBackendTimeout, ErrBackendUnreachable, ErrInternal,
		ErrAuthUnsupported, ErrInvalidAppKey, ErrInvalidSignature, ErrTimestampExpired, ErrInvalidTimestamp, ErrNonceUsed,
		ErrInvalidMD5, ErrUnauthorized, ErrGrantExpired, ErrIPDenied, ErrThrottledAPI, ErrThrottledApp, ErrThrottledUser,
		ErrInvalidParam, ErrMissingParam, ErrInvalidBody} {
		if !codes[must.Code] {
			t.Errorf("%s missing from Errors()", must.Code)
		}
	}
	if ErrBodyTooLarge.Code != "I413RL" || ErrBackendTimeout.Code != "D504TO" || ErrInvalidSignature.Code != "A403IS" || ErrThrottledApp.Code != "T429AP" {
		t.Error("codes fixed by DESIGN.md changed")
	}
}

func TestErrorDetailIsEscaped(t *testing.T) {
	c := &Call{Ctx: &fasthttp.RequestCtx{}}
	newIDGen("x").next(&c.reqID)
	c.FailDetail(ErrInvalidSignature, "GET\n\"quoted\"\r\n/path")
	msg := string(c.Ctx.Response.Header.Peek("X-Ca-Error-Message"))
	if msg != "Invalid Signature: GET#\"quoted\"##/path" {
		t.Errorf("header message %q", msg)
	}
	var body map[string]string
	if err := json.Unmarshal(c.Ctx.Response.Body(), &body); err != nil || body["message"] != "Invalid Signature: GET\n\"quoted\"\r\n/path" {
		t.Errorf("body %q: %v", c.Ctx.Response.Body(), err)
	}
}

// TestAppliesRacingLiveTraffic swaps two config versions while clients call: every
// answer must come whole from one version (body and header agree), and both versions
// must have been seen.
func TestAppliesRacingLiveTraffic(t *testing.T) {
	// The http backend echoes the path it was sent, which names the version.
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetBytesV("X-Version", ctx.Path()[1:])
		ctx.SetBody(ctx.Path()[1:])
	})
	version := func(v string) *fsm.State {
		st := newStateOf()
		m := mockDef("GET", "/m", v)
		m.Backend.Headers = map[string]string{"X-Version": v}
		st.api("g", "m", m, fsm.StageRelease)
		// The http route's backend path names the version.
		st.api("g", "h", httpDef("GET", "/h", "http://"+addr, "/"+v), fsm.StageRelease)
		// An API present in v1 only: in v2 it must be not found, never half-served.
		if v == "v1" {
			st.api("g", "only1", mockDef("GET", "/only1", "v1"), fsm.StageRelease)
		}
		return st.s
	}
	v1, v2 := version("v1"), version("v2")
	g := startProxy(t, Config{}, v1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				g.p.Update(v2)
			} else {
				g.p.Update(v1)
			}
		}
	}()

	var mu sync.Mutex
	counts := map[string]int{}
	deadline := time.Now().Add(3 * time.Second)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := 0; i < 600 && time.Now().Before(deadline); i++ {
				path := [...]string{"/m", "/h", "/only1"}[i%3]
				req.Reset()
				req.SetRequestURI(path)
				req.Header.SetHost("g.localhost")
				req.UseHostHeader = true
				if err := g.client.DoTimeout(req, resp, 5*time.Second); err != nil {
					t.Errorf("call: %v", err)
					return
				}
				body, ver := string(resp.Body()), string(resp.Header.Peek("X-Version"))
				switch path {
				case "/m", "/h":
					if body != ver || (body != "v1" && body != "v2") {
						t.Errorf("mock answered body %q with version header %q", body, ver)
					}
				case "/only1":
					if !(resp.StatusCode() == 200 && body == "v1") && string(resp.Header.Peek("X-Ca-Error-Code")) != ErrAPINotFound.Code {
						t.Errorf("only1 answered %d %q", resp.StatusCode(), body)
					}
				}
				mu.Lock()
				counts[path+" "+body]++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	wg.Wait()
	close(stop)
	if counts["/m v1"] == 0 || counts["/m v2"] == 0 {
		t.Errorf("both versions should have been served while racing: %v", counts)
	}
	if counts["/h v1"]+counts["/h v2"] == 0 {
		t.Errorf("http route never answered: %v", counts)
	}
}

// TestAppliesRacingHTTPBackend swaps versions of an http route on the same backend:
// every call succeeds, and the backend's client (its keep-alive pool) is kept.
func TestAppliesRacingHTTPBackend(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBody(ctx.Path()[1:]) // "/v1" → "v1"
	})
	mk := func(v string) *fsm.State {
		return newStateOf().api("g", "h", httpDef("GET", "/h/[x]", "http://"+addr, "/"+v), fsm.StageRelease).s
	}
	v1, v2 := mk("v1"), mk("v2")
	g := startProxy(t, Config{}, v1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 500; i++ {
			if i%2 == 0 {
				g.p.Update(v2)
			} else {
				g.p.Update(v1)
			}
		}
	}()
	for i := 0; i < 400; i++ {
		r := g.call(t, "GET", "g.localhost", "/h/x", nil)
		if r.status != 200 || (r.body != "v1" && r.body != "v2") {
			t.Fatalf("answer %d %q", r.status, r.body)
		}
	}
	<-done
	if len(g.p.clients) != 1 {
		t.Errorf("one backend address should keep one client across updates, have %d", len(g.p.clients))
	}
}

func TestClientsKeptAndDropped(t *testing.T) {
	a := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("a") })
	b := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("b") })
	g := startProxy(t, Config{}, newStateOf().api("g", "x", httpDef("GET", "/", "http://"+a, "/"), fsm.StageRelease).s)
	g.call(t, "GET", "g.localhost", "/", nil)
	ca := g.p.clients[clientKey("http", a, "")]
	if ca == nil {
		t.Fatal("no client for a")
	}
	st := newStateOf().api("g", "x", httpDef("GET", "/", "http://"+a, "/"), fsm.StageRelease)
	st.api("g", "y", httpDef("GET", "/y", "http://"+b, "/"), fsm.StageRelease)
	g.p.Update(st.s)
	if g.p.clients[clientKey("http", a, "")] != ca {
		t.Error("client for a was replaced by a rebuild")
	}
	g.p.Update(newStateOf().api("g", "y", httpDef("GET", "/y", "http://"+b, "/"), fsm.StageRelease).s)
	if g.p.clients[clientKey("http", a, "")] != nil || len(g.p.clients) != 1 {
		t.Errorf("unused client kept: %v", g.p.clients)
	}
	if r := g.call(t, "GET", "g.localhost", "/y", nil); r.body != "b" {
		t.Errorf("got %q", r.body)
	}
}

func TestMetrics(t *testing.T) {
	st := newStateOf().api("g", "a", mockDef("GET", "/a", "hello"), fsm.StageRelease, fsm.StageTest)
	st.api("g", "b", mockDef("GET", "/b", "b"), fsm.StageRelease)
	g := startProxy(t, Config{}, st.s)
	for i := 0; i < 3; i++ {
		g.call(t, "GET", "g.localhost", "/a", nil)
	}
	g.call(t, "GET", "g.localhost", "/a", nil, "X-Ca-Stage", "TEST")
	g.call(t, "GET", "g.localhost", "/zzz", nil)
	g.call(t, "GET", "nobody.localhost", "/zzz", nil)

	count := func(name string, labels map[string]string) float64 {
		mfs, err := g.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range m.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue next
					}
				}
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount())
				}
			}
		}
		return -1
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tollgate_proxy_requests_total", map[string]string{"group": "g", "api": "a", "stage": "RELEASE", "class": "2xx"}, 3},
		{"tollgate_proxy_requests_total", map[string]string{"group": "g", "api": "a", "stage": "TEST", "class": "2xx"}, 1},
		{"tollgate_proxy_requests_total", map[string]string{"group": "g", "api": "b", "stage": "RELEASE", "class": "2xx"}, 0},
		{"tollgate_proxy_requests_total", map[string]string{"group": "g", "api": "", "stage": "", "class": "4xx"}, 1},
		{"tollgate_proxy_requests_total", map[string]string{"group": "", "api": "", "stage": "", "class": "4xx"}, 1},
		{"tollgate_proxy_response_bytes_total", map[string]string{"group": "g", "api": "a", "stage": "RELEASE"}, 15},
		{"tollgate_proxy_request_duration_seconds", map[string]string{"group": "g", "stage": "RELEASE"}, 3},
	}
	for _, c := range checks {
		if got := count(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Removing API a deletes its children; b's stay.
	g.p.Update(newStateOf().api("g", "b", mockDef("GET", "/b", "b"), fsm.StageRelease).s)
	if got := count("tollgate_proxy_requests_total", map[string]string{"api": "a"}); got != -1 {
		t.Errorf("children of a removed API survive the rebuild (%v)", got)
	}
	if got := count("tollgate_proxy_requests_total", map[string]string{"api": "b", "class": "2xx"}); got != 0 {
		t.Errorf("children of b lost: %v", got)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	def := mockDef("GET", "/slow", "done")
	def.Backend.Delay = fsm.Duration(300 * time.Millisecond)
	p, err := New(Config{Logger: nil})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(newStateOf().api("g", "s", def, fsm.StageRelease).s)
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	got := make(chan string, 1)
	go func() {
		c := &fasthttp.HostClient{Addr: ln.Addr().String()}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://g.localhost/slow")
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			got <- err.Error()
			return
		}
		got <- string(resp.Body())
	}()
	time.Sleep(100 * time.Millisecond) // the request is in the mock's delay
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if b := <-got; b != "done" {
		t.Errorf("in-flight request got %q", b)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve returned %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestBrokenRouteAnswersInternalError(t *testing.T) {
	def := httpDef("GET", "/x", "ftp://nowhere", "/")
	st := newStateOf().api("g", "x", def, fsm.StageRelease)
	var logs bytes.Buffer
	g := startProxy(t, Config{Logger: testLogger(&logs)}, st.s)
	wantError(t, g.call(t, "GET", "g.localhost", "/x", nil), ErrInternal)
	if !strings.Contains(logs.String(), "g/x") {
		t.Errorf("problem not logged: %s", logs.String())
	}
}

func testLogger(w *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

func TestUpdateReusesCompiledVersions(t *testing.T) {
	st := newStateOf().api("g", "a", mockDef("GET", "/a", "v1"), fsm.StageRelease)
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	p.Update(st.s)
	lookup := func() *Route {
		var ps params
		r, _ := p.table.Load().hosts["g.localhost"].stages[fsm.StageRelease.Index()].lookup(0, []byte("/a"), &ps)
		return r
	}
	r1 := lookup()
	st.s.Index++ // another command applied, the version unchanged
	p.Update(st.s)
	if r2 := lookup(); r2 != r1 {
		t.Error("an unchanged version was compiled again")
	}
	st.api("g", "a", mockDef("GET", "/a", "v2"), fsm.StageRelease)
	p.Update(st.s)
	if r3 := lookup(); r3 == r1 || r3.Version != 2 {
		t.Errorf("a new version must be compiled: %+v", r3)
	}
}

// TestForwardedForOnOneConnection: a connection keeps its peer's address formatted;
// each request on it gets that address after what it sent itself, never after what
// an earlier request on the connection sent.
func TestForwardedForOnOneConnection(t *testing.T) {
	addr, got := recordingBackend(t, nil)
	st := newStateOf().api("xff", "x", httpDef("GET", "/x", "http://"+addr, ""), fsm.StageRelease)
	g := startProxy(t, Config{}, st.s)
	for _, prior := range []string{"203.0.113.7", "", "198.51.100.1, 203.0.113.9", ""} {
		var hdrs []string
		want := "127.0.0.1"
		if prior != "" {
			hdrs = []string{"X-Forwarded-For", prior}
			want = prior + ", 127.0.0.1"
		}
		if r := g.call(t, "GET", "xff.localhost", "/x", nil, hdrs...); r.status != 200 {
			t.Fatalf("status %d %q", r.status, r.body)
		}
		select {
		case b := <-got:
			if b.hdr["X-Forwarded-For"] != want {
				t.Errorf("after %q: X-Forwarded-For %q, want %q", prior, b.hdr["X-Forwarded-For"], want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("backend saw nothing")
		}
	}
}
