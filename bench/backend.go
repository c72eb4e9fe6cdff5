package main

import (
	"bytes"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
)

// The child modes: the bench re-executes its own binary with childEnv set to
// one of these, and childListen / childUpstream naming the addresses.
const (
	childEnv      = "TOLLGATE_BENCH_CHILD"
	childListen   = "TOLLGATE_BENCH_LISTEN"
	childUpstream = "TOLLGATE_BENCH_UPSTREAM"

	modeBackend   = "backend"
	modeBareProxy = "bareproxy"
	modeBareLoop  = "bareloop"
)

// smallBody is the 64-byte JSON body every path but /4k answers with.
var smallBody = []byte(`{"ok":true,"service":"tollgate-bench","payload":"0123456789abc"}`)

// largeBody is the 4 KiB body paths ending in /4k answer with.
var largeBody = func() []byte {
	b := bytes.Repeat([]byte("x"), 4096)
	copy(b, `{"ok":true,"pad":"`)
	copy(b[4096-2:], `"}`)
	return b
}()

func init() {
	if len(smallBody) != 64 {
		panic("smallBody must be 64 bytes")
	}
}

// bodyFor returns the body the backend answers path with.
func bodyFor(path string) []byte {
	if strings.HasSuffix(path, "/4k") {
		return largeBody
	}
	return smallBody
}

// runChild runs the child mode named in the environment and reports whether
// there was one. It does not return while the child serves.
func runChild() bool {
	var err error
	switch os.Getenv(childEnv) {
	case modeBackend:
		err = serveBackend(os.Getenv(childListen))
	case modeBareProxy:
		err = serveBareProxy(os.Getenv(childListen), os.Getenv(childUpstream))
	case modeBareLoop:
		err = serveBareLoop(os.Getenv(childListen), os.Getenv(childUpstream))
	default:
		return false
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

// serveBackend serves the fixed backend on addr until killed.
func serveBackend(addr string) error {
	s := &fasthttp.Server{
		Name:                  "bench-backend",
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			ctx.SetBody(bodyFor(string(ctx.Path())))
		},
	}
	return s.ListenAndServe(addr)
}
