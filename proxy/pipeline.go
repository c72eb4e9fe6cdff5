package proxy

import (
	"net/netip"
	"strings"
	"time"

	"github.com/tollgate/tollgate/access"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/param"
	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

// Call is the per-request context every pipeline stage reads and writes. Calls are
// pooled: a stage must not keep a Call, or any slice it hands out, after the request
// ends. A later stage that needs per-request state adds a field here and clears it in
// reset, so the hot path keeps allocating nothing.
type Call struct {
	// Ctx is the fasthttp request being served.
	Ctx *fasthttp.RequestCtx
	// Route is the compiled route the request matched; nil before routing.
	Route *Route
	// Stage is the stage selected by X-Ca-Stage.
	Stage fsm.Stage
	// Start is when the handler began.
	Start time.Time
	// BackendTime is how long the backend call took (zero for mock backends).
	BackendTime time.Duration

	// table is the config version the request runs on. Stages that read state kept
	// outside the API version (apps, grants, backend keys, IP policies) read it here,
	// never from the Route, so a route compiled for an earlier table stays correct.
	table *table
	// app is the calling app once auth (app or appcode) has accepted it.
	app *app
	// claims are the verified JWT's claims (auth: jwt).
	claims *access.Claims
	si     int // index of Stage in fsm.Stages

	clientIP netip.Addr // valid once ipDone
	ipDone   bool

	params params
	path   []byte // copy of the decoded request path; params point into it
	host   []byte // lower-cased Host without port
	buf    []byte // scratch for the current stage
	conn   []byte // scratch for the Connection header's tokens
	msg    []byte // an error message being built
	sysBuf []byte // the system parameters' formatted values
	reqID  [requestIDLen]byte
	failed *ErrorCode

	sig signature.Scratch // app signature check and backend signing
	ps  param.Scratch     // parameter verification and conversion
	sys param.System

	// lc is the event loop's connection the request came on, nil when a goroutine
	// serves it. A step that cannot answer at once hands the request to it
	// (loopConn.forward, after), and the loop finishes it when the answer comes.
	lc *loopConn
}

func (c *Call) reset() {
	c.Ctx = nil
	c.Route = nil
	c.Stage = ""
	c.BackendTime = 0
	c.table = nil
	c.app = nil
	c.claims = nil
	c.ipDone = false
	c.params.n = 0
	for i := range c.params.v {
		c.params.v[i] = nil
	}
	c.sys = param.System{}
	c.failed = nil
	c.lc = nil
}

// Param returns the decoded value of the path parameter name, or nil. The slice is
// valid until the request ends.
func (c *Call) Param(name string) []byte {
	if c.Route == nil {
		return nil
	}
	for i, n := range c.Route.paramNames {
		if n == name && i < c.params.n {
			return c.params.v[i]
		}
	}
	return nil
}

// RequestID returns the request's X-Ca-Request-Id. The slice is valid until the request
// ends.
func (c *Call) RequestID() []byte { return c.reqID[:] }

// Failed returns the error the request was answered with, or nil.
func (c *Call) Failed() *ErrorCode { return c.failed }

// ClientIP returns the client's address: the socket's peer, or, behind a proxy listed
// in Config.TrustedProxies, the address X-Forwarded-For vouches for. Computed once per
// request; it does not allocate.
func (c *Call) ClientIP() netip.Addr {
	if !c.ipDone {
		var trusted *access.Trusted
		if c.table != nil {
			trusted = c.table.trusted
		}
		c.clientIP = access.ClientIPFromHeader(c.Ctx.RemoteAddr(), &c.Ctx.Request.Header, trusted)
		c.ipDone = true
	}
	return c.clientIP
}

// Fail answers the request with e and returns false, so a stage can end with
// `return c.Fail(ErrX)`.
func (c *Call) Fail(e *ErrorCode) bool { return c.fail(e, nil) }

// FailDetail answers with e, its message followed by ": " and detail (for example the
// parameter's name). It returns false.
func (c *Call) FailDetail(e *ErrorCode, detail string) bool {
	if detail == "" {
		return c.fail(e, nil)
	}
	m := append(c.msg[:0], e.message...)
	m = append(m, ": "...)
	m = append(m, detail...)
	c.msg = m
	return c.fail(e, m)
}

// FailMessage answers with e's status and code and msg as the whole message, for
// refusals whose message is not "Message: detail" (Alibaba's "Invalid Signature,
// Server StringToSign:`...`"). Control characters in msg become '#'. It returns false.
func (c *Call) FailMessage(e *ErrorCode, msg []byte) bool { return c.fail(e, msg) }

// fail writes the error answer: msg nil means e's own message. It allocates nothing
// once the Call's buffers have grown.
func (c *Call) fail(e *ErrorCode, msg []byte) bool {
	c.failed = e
	resp := &c.Ctx.Response
	resp.Reset()
	resp.SetStatusCode(e.Status)
	resp.Header.SetCanonical(hdrErrorCode, e.code)
	b := c.buf[:0]
	if msg == nil {
		resp.Header.SetCanonical(hdrErrorMessage, e.message)
		b = append(b, e.jsonStart...)
	} else {
		b = appendHeaderSafe(b, msg)
		resp.Header.SetCanonical(hdrErrorMessage, b)
		b = append(b[:0], `{"code":"`...)
		b = append(b, e.code...)
		b = append(b, `","message":"`...)
		b = appendJSONString(b, msg)
	}
	resp.Header.SetContentTypeBytes(contentTypeJSON)
	b = append(b, `","requestId":"`...)
	b = append(b, c.reqID[:]...)
	b = append(b, "\"}\n"...)
	resp.SetBody(b) // copies, so buf stays ours
	c.buf = b[:0]
	return false
}

// Step is one compiled stage of a route's pipeline. It returns true to go on to the
// next step and false when it has answered the request itself (an error through
// Call.Fail, or a final answer such as a mock backend's).
//
// A Step runs on the connection's goroutine, concurrently with the same Step serving
// other requests: it must only read what the route compiled and write to the Call.
type Step func(c *Call) bool

// stageBuilder compiles one stage of the pipeline for a route. It returns a nil Step
// when the route does not need the stage, so the stage costs that route nothing.
type stageBuilder func(b *builder, r *Route, def *fsm.APIDef) (Step, error)

// stage names a pipeline stage; DESIGN.md "One request, end to end" fixes the order.
type stage struct {
	name  string
	build stageBuilder
	// versionOnly says the Step depends only on the API version, the group's name and
	// the proxy's Config. While every stage says so, Update reuses a route compiled for
	// the same version instead of compiling it again. A stage that reads other state
	// (apps, grants, traffic policies, backend keys) either reads it per request from
	// Call.table, compiled once per table (what auth, grant, guard and forward do), and
	// stays version-only, or leaves this false, which turns reuse off until that state
	// is part of the reuse key.
	versionOnly bool
}

// pipeline is the order stages run in. Routing happens before it (in the handler) and
// record after it. To add a stage, write its builder and insert it in its place.
//
//	route     handler: Host → group, X-Ca-Stage → stage, method+path → Route
//	guard     IP access control (size limits are the fasthttp server's)
//	auth      app signature | appcode | JWT | anonymous
//	grant     app authorized for this API in this stage, not expired; per-app IP lists
//	throttle  default-subdomain cap; API / app / user quotas (ratelimit, cluster-wide)
//	verify    parameter types and values, and conversion (param.Plan.Apply)
//	convert   JWT claims passed to the backend
//	forward   http(s) or mock backend; backend path and backend signature
//	record    handler: metrics
//
// The request body is whole before the first stage runs (the fasthttp server reads it
// and does not stream), so verify and the signature check can read it.
var pipeline = []stage{
	{"guard", buildGuard, true},
	{"auth", buildAuth, true},
	{"grant", buildGrant, true},
	{"throttle", buildThrottle, true},
	{"verify", buildVerify, true},
	{"convert", buildClaims, true},
	{"forward", buildForward, true},
}

// reusable reports whether compiled routes may be carried over between versions.
func reusable() bool {
	for _, s := range pipeline {
		if !s.versionOnly {
			return false
		}
	}
	return true
}

// buildForward compiles the route's backend.
func buildForward(b *builder, r *Route, def *fsm.APIDef) (Step, error) {
	switch strings.ToLower(def.Backend.Type) {
	case fsm.BackendMock:
		return newMock(&def.Backend)
	case fsm.BackendHTTP, "":
		return b.newHTTP(r, def)
	}
	return nil, errUnknownBackend(def.Backend.Type)
}
