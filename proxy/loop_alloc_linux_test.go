//go:build linux && !race

package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/valyala/fasthttp"
)

// TestZeroAllocEventLoop: a request the event loop serves, from the client's bytes to
// the answer's, allocates nothing in the whole process — with a mock backend and with
// an http one (the backend, a fasthttp server, allocates nothing either once warm).
func TestZeroAllocEventLoop(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"ok":true}`) })
	s := newStateOf().api("g", "mock", mockDef("GET", "/mock/[id]", `{"ok":true}`), fsm.StageRelease).
		api("g", "http", httpDef("GET", "/http/[id]", "http://"+addr, "/v2/[id]"), fsm.StageRelease).s
	g := loopGateway(t, Config{}, s)
	c, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64<<10)
	for _, path := range []string{"/mock/42?x=1", "/http/42?x=1"} {
		req := []byte("GET " + path + " HTTP/1.1\r\nHost: g.localhost\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n")
		run := func() {
			if _, err := c.Write(req); err != nil {
				t.Fatal(err)
			}
			if status := readAnswerInto(t, c, buf); status != 200 {
				t.Fatalf("%s: status %d", path, status)
			}
		}
		for range 20 { // warm pools and buffers
			run()
		}
		if n := testing.AllocsPerRun(500, run); n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", path, n)
		}
	}
	servedByLoop(t, g, 1)
}
