package proxy

import (
	"strings"
	"time"

	"github.com/tollgate/tollgate/fsm"
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

	params params
	path   []byte // copy of the decoded request path; params point into it
	host   []byte // lower-cased Host without port
	buf    []byte // scratch for the current stage
	conn   []byte // scratch for the Connection header's tokens
	reqID  [requestIDLen]byte
	failed *ErrorCode
}

func (c *Call) reset() {
	c.Ctx = nil
	c.Route = nil
	c.Stage = ""
	c.BackendTime = 0
	c.params.n = 0
	for i := range c.params.v {
		c.params.v[i] = nil
	}
	c.failed = nil
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

// Fail answers the request with e and returns false, so a stage can end with
// `return c.Fail(ErrX)`.
func (c *Call) Fail(e *ErrorCode) bool { return c.FailDetail(e, "") }

// FailDetail answers with e, its message followed by ": " and detail (for example the
// parameter's name or the server's StringToSign). It returns false.
func (c *Call) FailDetail(e *ErrorCode, detail string) bool {
	c.failed = e
	resp := &c.Ctx.Response
	resp.Reset()
	resp.SetStatusCode(e.Status)
	resp.Header.SetCanonical(hdrErrorCode, e.code)
	b := c.buf[:0]
	if detail == "" {
		resp.Header.SetCanonical(hdrErrorMessage, e.message)
	} else {
		b = append(b, e.message...)
		b = append(b, ": "...)
		b = appendHeaderSafe(b, detail)
		resp.Header.SetCanonical(hdrErrorMessage, b)
		b = b[:0]
	}
	resp.Header.SetContentTypeBytes(contentTypeJSON)
	b = append(b, e.jsonStart...)
	if detail != "" {
		b = append(b, ": "...)
		b = appendJSONString(b, detail)
	}
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
	// (apps, grants, traffic policies, backend keys) leaves it false, which turns reuse
	// off until that state is part of the reuse key.
	versionOnly bool
}

// pipeline is the order stages run in. Routing happens before it (in the handler) and
// record after it. A stage that is not built yet is absent: to add one (signature/,
// ratelimit/, param/ plug in here), write its builder and insert it in its place.
//
//	route     handler: Host → group, X-Ca-Stage → stage, method+path → Route
//	guard     IP access control (size limits are the fasthttp server's)   — not yet
//	auth      app signature | appcode | JWT | anonymous                    — anonymous only
//	grant     app authorized for this API in this stage                    — not yet
//	throttle  API / app / user quotas                                      — not yet
//	verify    parameter types and values                                   — not yet
//	convert   frontend → backend mapping, constants, system parameters     — not yet
//	forward   http(s) or mock backend
//	record    handler: metrics
var pipeline = []stage{
	{"auth", buildAuth, true},
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

// buildAuth passes anonymous APIs and refuses every other mode until app signatures,
// AppCode and JWT land: an API that asks for auth must never be served without it.
func buildAuth(_ *builder, _ *Route, def *fsm.APIDef) (Step, error) {
	mode := strings.ToLower(strings.TrimSpace(def.Auth))
	if mode == fsm.AuthAnonymous {
		return nil, nil
	}
	if mode == "" {
		mode = "(none given)"
	}
	return func(c *Call) bool {
		return c.FailDetail(ErrAuthUnsupported, mode)
	}, nil
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
