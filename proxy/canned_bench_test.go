package proxy

import (
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/ratelimit"
	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

// cannedConn is a backend connection that answers every request written to it with
// the same response, in memory: a benchmark over it measures the gateway's own CPU
// (pipeline, request writing, response parsing), without syscalls or a backend.
type cannedConn struct {
	resp    []byte
	pending []byte
}

func (c *cannedConn) Write(b []byte) (int, error) { c.pending = c.resp; return len(b), nil }
func (c *cannedConn) Read(b []byte) (int, error) {
	if len(c.pending) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}
func (c *cannedConn) Close() error                     { return nil }
func (c *cannedConn) LocalAddr() net.Addr              { return cannedAddr }
func (c *cannedConn) RemoteAddr() net.Addr             { return cannedAddr }
func (c *cannedConn) SetDeadline(time.Time) error      { return nil }
func (c *cannedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *cannedConn) SetWriteDeadline(time.Time) error { return nil }

const cannedBody = `{"ok":true,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}` + "\n"

var cannedAddr net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}

var cannedResponse = []byte("HTTP/1.1 200 OK\r\nServer: backend\r\nDate: Sat, 28 Nov 2026 01:00:00 GMT\r\n" +
	"Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(cannedBody)) + "\r\n\r\n" + cannedBody)

// benchFullDef is the bench's "full" scenario (bench/scenarios.go): app signature,
// quota, five verified parameters (one a regex) and a backend signature.
func benchFullDef(url string) fsm.APIDef {
	minD, maxD, maxL := 1.0, 14.0, 8
	def3 := "3"
	return fsm.APIDef{Method: "GET", Path: "/full/[item]", Auth: fsm.AuthApp, Traffic: "bench-quota",
		Params: []fsm.Param{
			{Name: "item", In: fsm.InPath, Type: "string", Required: true, Regex: "^[a-z0-9]+$"},
			{Name: "days", In: fsm.InQuery, Type: "int", Min: &minD, Max: &maxD, Default: &def3},
			{Name: "unit", In: fsm.InQuery, Type: "string", Enum: []string{"c", "f"}},
			{Name: "lang", In: fsm.InQuery, Type: "string", MaxLength: &maxL},
			{Name: "X-Trace", In: fsm.InHeader, Type: "string", Required: true},
		},
		Backend: fsm.Backend{Type: fsm.BackendHTTP, URL: url, Path: "/json", Signature: "bench-key"}}
}

// BenchmarkCannedBackend runs the Handler for the bench scenarios against an
// in-memory backend that answers at once: the CPU Tollgate itself spends per request,
// without the kernel's share, deterministic enough to compare changes by.
func BenchmarkCannedBackend(b *testing.B) {
	p, cases := cannedProxy(b)
	seq := 0
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			call := c.caller(b, p, func() int { seq++; return seq })
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if st := call(); st != 200 {
					b.Fatalf("status %d", st)
				}
			}
		})
	}
}

// BenchmarkCannedBackendParallel is BenchmarkCannedBackend from every P at once, one
// request context each: what shared state (counters, metrics, the nonce store) costs
// when requests on different cores touch it. Compare its ns/op × GOMAXPROCS with the
// serial figure (-cpu 2 against -cpu 1).
func BenchmarkCannedBackendParallel(b *testing.B) {
	p, cases := cannedProxy(b)
	var seq atomic.Int64
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				call := c.caller(b, p, func() int { return int(seq.Add(1)) })
				for pb.Next() {
					if st := call(); st != 200 {
						b.Errorf("status %d", st)
						return
					}
				}
			})
		})
	}
}

// cannedCase is one bench scenario's request.
type cannedCase struct {
	name, uri string
	sign      bool
	headers   []string
}

// cannedProxy builds a proxy with the bench scenarios' APIs over the canned backend.
func cannedProxy(b *testing.B) (*Proxy, []cannedCase) {
	const url = "http://canned.invalid:80"
	lim, err := ratelimit.New(ratelimit.Config{})
	if err != nil {
		b.Fatal(err)
	}
	if err := lim.SetPolicies([]ratelimit.Policy{{Name: "bench-quota", Window: ratelimit.Minute, API: 1e9, App: 1e9, User: 1e9}}); err != nil {
		b.Fatal(err)
	}
	lim.Start()
	b.Cleanup(lim.Close)
	nonces, err := ratelimit.NewNonceStore(ratelimit.NonceConfig{})
	if err != nil {
		b.Fatal(err)
	}
	signed := httpDef("GET", "/signed/json", url, "/json")
	signed.Auth = fsm.AuthApp
	st := newStateOf().
		api("bench", "json", httpDef("GET", "/json", url, "/json"), fsm.StageRelease).
		api("bench", "signed", signed, fsm.StageRelease).
		api("bench", "full", benchFullDef(url), fsm.StageRelease).
		app("bench-app", "204000001", "", "bench-secret").
		grant("bench-app", "bench/signed", nil, fsm.StageRelease).
		grant("bench-app", "bench/full", nil, fsm.StageRelease).
		backendKey("bench-key", "BenchKey", "BenchSecret")
	a := st.s.Apps["bench-app"]
	a.Owner = "bench"
	st.s.Apps["bench-app"] = a
	p, err := New(Config{Registerer: prometheus.NewRegistry(), Limiter: lim, Nonces: nonces})
	if err != nil {
		b.Fatal(err)
	}
	p.Update(st.s)
	for _, c := range p.clients {
		c.dial = func(string, time.Duration) (net.Conn, error) { return &cannedConn{resp: cannedResponse}, nil }
	}
	return p, []cannedCase{
		{"anon", "/json", false, nil},
		{"app-sign", "/signed/json", true, []string{"Accept", "application/json"}},
		{"full", "/full/paris42?days=5&unit=c&lang=en", true, []string{"Accept", "application/json", "X-Trace", "bench"}},
	}
}

// caller returns a function that serves the case's request through p once, with its
// own request context and a fresh nonce from next, and returns the status. It waits
// until the first call succeeds: the limiter hands out quota budget from its loop.
func (c cannedCase) caller(b *testing.B, p *Proxy, next func() int) func() int {
	var req fasthttp.Request
	req.Header.SetMethod("GET")
	req.SetRequestURI(c.uri)
	req.Header.SetHost("bench.localhost")
	req.Header.Set("User-Agent", "tollgate-bench")
	for i := 0; i+1 < len(c.headers); i += 2 {
		req.Header.Set(c.headers[i], c.headers[i+1])
	}
	var r *fasthttp.Request = &req
	if c.sign {
		r = unsignedNonceReq(b, signature.NewSigner("204000001", "bench-secret"), "bench-secret", c.uri, append([]string{"User-Agent", "tollgate-bench"}, c.headers...)...)
		r.Header.SetHost("bench.localhost")
	}
	ctx := new(fasthttp.RequestCtx)
	ctx.Init(r, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, nil)
	nonce := make([]byte, 0, 32)
	call := func() int {
		if c.sign {
			nonce = strconv.AppendInt(append(nonce[:0], "n-"...), int64(next()), 10)
			r.Header.SetBytesV("X-Ca-Nonce", nonce)
		}
		r.CopyTo(&ctx.Request)
		ctx.Response.Reset()
		p.Handler(ctx)
		return ctx.Response.StatusCode()
	}
	for deadline := time.Now().Add(2 * time.Second); call() != 200 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return call
}
