// Package proxy is Tollgate's data plane: a fasthttp server that routes each request to
// the API version its stage serves and runs that route's compiled pipeline.
//
// # One request
//
// The handler routes (Host → group, X-Ca-Stage → stage, method + path → Route), runs the
// route's steps in the fixed order of DESIGN.md (guard, auth, grant, throttle, verify,
// convert, forward; see the pipeline variable for which exist yet), then records
// metrics. Each step is a small function over a pooled per-request Call, compiled once
// per route per config version: a stage the route does not need is not in its chain
// at all. The hot path reads only the compiled table, takes no locks and, for a routed
// anonymous request, allocates nothing (alloc_test.go guards this).
//
// # Apps, grants and keys
//
// auth: app checks the Alibaba app signature (signature.Verifier: HmacSHA256/SHA1,
// timestamp window Config.SignatureWindow, Content-MD5, nonce once through
// Config.Nonces); auth: appcode takes `Authorization: APPCODE <code>` or the AppCode
// query parameter (and strips it); auth: jwt is access.JWTVerifier. The grant stage
// then requires the app's grant of the API in the request's stage, unexpired. Apps,
// grants, backend keys and IP policies live outside the API versions, so they are
// compiled into the table, not the route, and stages read them through the Call: a
// route is still reused across versions, and a revoked grant, a disabled app or a
// changed key applies from the first request on the new table. An API that declares
// parameters compiles a param.Plan (verify stage); forward builds the backend path
// from it and, when backend.signature names a key, signs the final request.
//
// # Config versions
//
// Update compiles a whole table from an fsm.State and publishes it with an
// atomic.Pointer, so every request sees one version from start to end. Backend
// clients (one per scheme, address and CA) and metric children are shared across
// versions and released when no route uses them any more, so keep-alive connections
// survive rebuilds.
//
// # Routing rules
//
//   - A group is reached at <group>.<BaseDomain> and at its custom domains; the Host is
//     compared case-insensitively, without port or trailing dot. A Host that names no
//     group serves only /healthz and /readyz (for load balancers) and answers I404DM
//     otherwise.
//   - X-Ca-Stage picks TEST, PRE or RELEASE (any case; default RELEASE); anything else
//     answers I400SG. Only the version the stage serves is routed; an API that exists
//     but serves nothing in that stage answers I404SD, not I404NF.
//   - Paths match segment by segment after percent-decoding (fasthttp decodes and
//     normalizes the request path; API patterns are decoded too), so unicode and
//     percent-encoded paths match either way, and parameter values arrive decoded. An
//     encoded slash (%2F) is decoded like any byte and therefore splits segments.
//   - A trailing slash is ignored on both sides: "/a/" and "/a" are one pattern and
//     match both request paths. "/" matches only the root.
//   - A static segment beats a [param] at the same depth; if the static branch fails
//     deeper, the lookup backtracks into the parameter branch. An exact method beats
//     ANY. A path that matches with another method answers 405 I405UM with Allow.
//
// # Backends
//
// http(s): the request is forwarded in place with the backend's Host, the backend path
// (its [param]s filled with the re-escaped values), the client's query, headers and
// body; hop-by-hop headers (and those named in Connection) are stripped both ways;
// X-Forwarded-For is appended and X-Forwarded-Proto/Host set. Timeouts answer D504TO,
// refused or broken connections D502CO. mock: a fixed status, headers and body after an
// optional, capped delay.
//
// # Sockets
//
// On Linux client and backend connections live in the process's own epoll set (the
// poller): a socket is read only once an event said it is readable, as nginx does,
// where Go's netpoller reads first and waits on EAGAIN (two failing reads per proxied
// request). Deadlines are kept coarsely, at most 50 ms late, never early.
//
// With Config.EventLoop (a node's workers, which run the data plane on one P each) the
// poller's goroutine serves client connections itself, as an nginx worker does: it
// reads a request when its event comes, runs the route's steps, sends the backend
// request and goes back to its events; the backend's answer is another event, from
// which it finishes the request. No goroutine is parked or woken per request. What it
// does not frame itself (chunked or expected request bodies, large ones, answers read
// to the close, TLS) goes to fasthttp's server or a goroutine (see eventLoop). With
// Config.LoopKeepsP too (the workers again), the goroutine waits for its next events
// in the kernel while busy instead of parking after each batch (see
// poller.gatherEvents).
//
// Every response carries X-Ca-Request-Id; every error also X-Ca-Error-Code,
// X-Ca-Error-Message and a small JSON body, from the one table in errors.go.
package proxy
