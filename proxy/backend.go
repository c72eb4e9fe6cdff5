package proxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/param"
	"github.com/valyala/fasthttp"
)

// Defaults for backends; Config can override the node-wide ones.
const (
	defaultBackendTimeout   = 10 * time.Second
	defaultMaxConns         = 1024
	defaultMaxResponseBody  = 32 << 20
	maxMockDelay            = 30 * time.Second
	defaultMaxConnWait      = time.Second
	defaultIdleConnDuration = 30 * time.Second
	// A backend connection's buffers: an answer or a request that fits is one read or
	// one write (with fasthttp's 4 KiB default, a 4 KiB body and its headers took
	// two). The read buffer also caps an answer's headers (fasthttp's ReadBufferSize).
	backendReadBufferSize  = 16 << 10
	backendWriteBufferSize = 16 << 10
)

var (
	hdrErrorCode    = []byte("X-Ca-Error-Code")
	hdrErrorMessage = []byte("X-Ca-Error-Message")
	hdrRequestID    = []byte("X-Ca-Request-Id")
	hdrStage        = []byte("X-Ca-Stage")
	hdrXFF          = []byte("X-Forwarded-For")
	hdrXFProto      = []byte("X-Forwarded-Proto")
	hdrXFHost       = []byte("X-Forwarded-Host")
	contentTypeJSON = []byte("application/json; charset=utf-8")
	schemeHTTP      = []byte("http")
	schemeHTTPS     = []byte("https")
	commaSpace      = []byte(", ")
	optClose        = []byte("close")
	optKeepAlive    = []byte("keep-alive")
	// hopByHopHeaders: at most 15 (stripHopByHop's bit set), Connection first.
	hopByHopHeaders  = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
	hdrConnection    = "Connection"
	hdrConnectionB   = []byte(hdrConnection)
	hdrExpect        = "Expect"
	errNoBackendURL  = errors.New("http backend has no url")
	errUnknownScheme = errors.New("backend url scheme must be http or https")
)

func errUnknownBackend(t string) error {
	return fmt.Errorf("unknown backend type %q (want http or mock)", t)
}

// mock answers from the gateway itself with a fixed status, headers and body.
type mock struct {
	status  int
	headers [][2][]byte
	body    []byte
	delay   time.Duration
}

func newMock(b *fsm.Backend) (Step, error) {
	m := &mock{status: b.Status, body: []byte(b.Body), delay: b.Delay.D()}
	if m.status == 0 {
		m.status = fasthttp.StatusOK
	}
	if m.status < 100 || m.status > 999 {
		return nil, fmt.Errorf("mock status %d is not an HTTP status", m.status)
	}
	// The delay sleeps on the connection's own goroutine (fasthttp runs one per
	// connection), so it holds no core; it is capped so a typo cannot pin connections.
	if m.delay < 0 {
		m.delay = 0
	}
	if m.delay > maxMockDelay {
		m.delay = maxMockDelay
	}
	hasType := false
	for _, k := range sortedKeys(b.Headers) {
		if strings.ContainsAny(k, "\r\n:") || strings.ContainsAny(b.Headers[k], "\r\n") {
			return nil, fmt.Errorf("mock header %q is malformed", k)
		}
		ck := fasthttp.AppendNormalizedHeaderKey(nil, k)
		if strings.EqualFold(k, "Content-Type") {
			hasType = true
		}
		m.headers = append(m.headers, [2][]byte{ck, []byte(b.Headers[k])})
	}
	if !hasType && len(m.body) > 0 && (m.body[0] == '{' || m.body[0] == '[') {
		m.headers = append(m.headers, [2][]byte{[]byte("Content-Type"), contentTypeJSON})
	}
	return m.serve, nil
}

func (m *mock) serve(c *Call) bool {
	if m.delay > 0 {
		if c.lc != nil {
			// The event loop must not sleep: the answer comes after the delay.
			return c.lc.after(c, m.delay, m.answer)
		}
		time.Sleep(m.delay)
	}
	return m.answer(c)
}

func (m *mock) answer(c *Call) bool {
	resp := &c.Ctx.Response
	resp.SetStatusCode(m.status)
	for _, h := range m.headers {
		resp.Header.SetCanonical(h[0], h[1])
	}
	// SetBodyRaw shares the compiled body instead of copying it; fasthttp never writes
	// into a response body it did not allocate.
	resp.SetBodyRaw(m.body)
	return true
}

// pathPart is a piece of a backend path template: literal text (already escaped) or the
// index of a path parameter whose value is escaped into it per request.
type pathPart struct {
	lit   []byte
	param int // -1 for a literal
}

// httpBackend forwards to an http or https backend through a shared backendClient.
type httpBackend struct {
	client  *backendClient
	scheme  []byte
	host    []byte // Host header and URI host for the backend
	path    []pathPart
	method  []byte // override; nil keeps the client's method
	timeout time.Duration

	// plan, when the API declares parameters, builds the path after prefix instead of
	// path (mapped parameters, constants and system parameters can fill segments).
	plan   *param.Plan
	prefix []byte
	sys    bool // the plan reads system parameters
	// sigKey names the backend key that signs what is sent; the key itself is read
	// from the request's table. sigHeaders are the header parameters the gateway
	// writes, which the signature covers besides every X-Ca-* header.
	sigKey     string
	sigHeaders []string
}

// clientKey identifies a backendClient: calls to the same scheme, address and CA share one
// pool of keep-alive connections, across routes and across table rebuilds.
func clientKey(scheme, addr, ca string) string {
	k := scheme + "://" + addr
	if ca != "" {
		s := sha256.Sum256([]byte(ca))
		k += "#" + hex.EncodeToString(s[:8])
	}
	return k
}

func (b *builder) newHTTP(r *Route, def *fsm.APIDef) (Step, error) {
	be := &def.Backend
	if be.URL == "" {
		return nil, errNoBackendURL
	}
	u, err := url.Parse(be.URL)
	if err != nil {
		return nil, fmt.Errorf("backend url %q: %v", be.URL, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return nil, errUnknownScheme
	}
	if u.Host == "" {
		return nil, fmt.Errorf("backend url %q has no host", be.URL)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	h := &httpBackend{
		scheme:  schemeHTTP,
		host:    []byte(u.Host),
		timeout: be.Timeout.D(),
	}
	if scheme == "https" {
		h.scheme = schemeHTTPS
	}
	if h.timeout <= 0 {
		h.timeout = defaultBackendTimeout
	}
	if be.Method != "" && !strings.EqualFold(be.Method, "ANY") {
		h.method = []byte(strings.ToUpper(be.Method))
	}
	tmpl := be.Path
	if tmpl == "" {
		tmpl = def.Path // no backend path: forward to the same path as the API's
	}
	if r.plan != nil {
		h.plan = r.plan
		h.prefix = []byte(strings.TrimSuffix(u.Path, "/"))
		h.sys = len(be.System) > 0
	} else if h.path, err = compileBackendPath(strings.TrimSuffix(u.Path, "/"), tmpl, r.paramNames); err != nil {
		return nil, err
	}
	if be.Signature != "" {
		if _, ok := b.state.BackendKeys[be.Signature]; !ok {
			return nil, fmt.Errorf("backend.signature names backend key %q, which does not exist", be.Signature)
		}
		h.sigKey = be.Signature
		h.sigHeaders = signedHeaderParams(def)
	}
	if h.client, err = b.client(scheme, addr, u.Hostname(), be.CA); err != nil {
		return nil, err
	}
	return h.serve, nil
}

// signedHeaderParams lists the headers the API sends as parameters (declared header
// parameters where they stay or are mapped to, constants, system parameters, JWT
// claims), for the backend signature. X-Ca-* headers are signed anyway.
func signedHeaderParams(def *fsm.APIDef) []string {
	var names []string
	for _, p := range def.Params {
		out, name := p.In, p.Name
		for _, m := range def.Backend.Map {
			if m.Param == p.Name {
				if m.In != "" {
					out = m.In
				}
				if m.Name != "" {
					name = m.Name
				}
			}
		}
		if out == fsm.InHeader {
			names = append(names, name)
		}
	}
	for _, k := range def.Backend.Constants {
		if k.In == fsm.InHeader {
			names = append(names, k.Name)
		}
	}
	for _, k := range def.Backend.System {
		if k.In == fsm.InHeader {
			if k.Name != "" {
				names = append(names, k.Name)
			} else {
				names = append(names, k.Param)
			}
		}
	}
	if def.JWT != nil {
		for _, cl := range def.JWT.Claims {
			if cl.In == fsm.InHeader {
				if cl.Name != "" {
					names = append(names, cl.Name)
				} else {
					names = append(names, cl.Claim)
				}
			}
		}
	}
	return names
}

// compileBackendPath turns prefix+tmpl (like /v2/weather/[city]) into parts. Literals
// are escaped once here; parameter values are escaped per request.
func compileBackendPath(prefix, tmpl string, names []string) ([]pathPart, error) {
	if !strings.HasPrefix(tmpl, "/") {
		tmpl = "/" + tmpl
	}
	var parts []pathPart
	lit := []byte(prefix)
	segs := strings.Split(tmpl[1:], "/")
	for _, s := range segs {
		lit = append(lit, '/')
		if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			name := s[1 : len(s)-1]
			idx := -1
			for i, n := range names {
				if n == name {
					idx = i
				}
			}
			if idx < 0 {
				return nil, fmt.Errorf("backend path %q names parameter [%s] that the API path does not have", tmpl, name)
			}
			parts = append(parts, pathPart{lit: lit, param: -1}, pathPart{param: idx})
			lit = nil
			continue
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, fmt.Errorf("backend path %q: %v", tmpl, err)
		}
		lit = appendEscapedSegment(lit, []byte(d))
	}
	if len(lit) > 0 {
		parts = append(parts, pathPart{lit: lit, param: -1})
	}
	return parts, nil
}

// segmentSafe marks the bytes left unescaped in a path segment: RFC 3986 unreserved
// characters and the sub-delimiters that mean nothing special inside a segment.
var segmentSafe = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~!$&'()*,;=:@" {
		t[c] = true
	}
	return t
}()

// appendEscapedSegment percent-encodes v as one path segment: '/', '?', '#', '%', '+',
// spaces and non-ASCII bytes are escaped, so a decoded parameter value reaches the
// backend as exactly one segment with the same value.
func appendEscapedSegment(dst, v []byte) []byte {
	const hexUpper = "0123456789ABCDEF"
	for _, c := range v {
		if segmentSafe[c] {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&0xf])
		}
	}
	return dst
}

// serve forwards the request in place: ctx.Request becomes the backend request and the
// backend's answer is read straight into ctx.Response, so nothing is copied twice.
func (h *httpBackend) serve(c *Call) bool {
	ctx := c.Ctx
	req := &ctx.Request

	// Backend path first: params point into c.path, which the URI change below leaves alone.
	p := c.buf[:0]
	if h.plan != nil {
		var sys *param.System
		if h.sys {
			sys = c.system()
		}
		p = append(p, h.prefix...)
		p = h.plan.BackendPath(p, c.params.v[:c.params.n], sys, &c.ps)
	} else {
		for i := range h.path {
			if h.path[i].param < 0 {
				p = append(p, h.path[i].lit...)
			} else {
				p = appendEscapedSegment(p, c.params.v[h.path[i].param])
			}
		}
	}
	c.buf = p

	// X-Forwarded-Host carries the client's Host before it becomes the backend's.
	req.Header.SetCanonical(hdrXFHost, req.Header.Host())
	stripRequestHopByHop(&req.Header, c, hdrExpect) // and Expect: the body is already read; the backend gets it whole
	c.appendXFF(req)
	if ctx.IsTLS() {
		req.Header.SetCanonical(hdrXFProto, schemeHTTPS)
	} else {
		req.Header.SetCanonical(hdrXFProto, schemeHTTP)
	}

	uri := req.URI()
	uri.SetSchemeBytes(h.scheme)
	uri.SetHostBytes(h.host)
	uri.SetPathBytes(p) // sent verbatim: the client has DisablePathNormalizing set
	req.Header.SetHostBytes(h.host)
	if h.method != nil {
		req.Header.SetMethodBytes(h.method)
	}
	// The client's Connection: close is the server's business (fasthttp recorded it
	// before calling us); the backend connection stays keep-alive.
	req.Header.ResetConnectionClose()
	if h.sigKey != "" {
		// Signed last, over the request exactly as it is sent. The key comes from the
		// same table as the route, so a key switch signs each call whole with one key.
		k := c.table.backendKeys[h.sigKey]
		if k == nil {
			return c.FailDetail(ErrInternal, "backend key missing")
		}
		uri.DisablePathNormalizing = true // as the client sends it
		k.Sign(req, h.sigHeaders, &c.sig)
	}

	// Offsets from c.Start read only the monotonic clock: time.Now reads the wall
	// clock as well, which nothing here needs.
	sent := time.Since(c.Start)
	if c.lc != nil {
		// Served by the event loop: the answer comes as an event, not by waiting here.
		return c.lc.forward(c, h, sent)
	}
	err := h.client.do(req, &ctx.Response, c.Start, c.Start.Add(sent+h.timeout))
	return h.answered(c, sent, err)
}

// answered finishes a backend call that went out sent after the call's start: the
// backend's time, and its answer or the error answer.
func (h *httpBackend) answered(c *Call, sent time.Duration, err error) bool {
	c.BackendTime = time.Since(c.Start) - sent
	if err != nil {
		return c.Fail(backendError(err))
	}
	resp := &c.Ctx.Response
	stripResponseHopByHop(&resp.Header, c)
	// A backend closing its connection says nothing about the client's.
	resp.Header.ResetConnectionClose()
	return true
}

// backendError maps a backendClient error to a row of the error table.
func backendError(err error) *ErrorCode {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout): // fasthttp's parsers report a read deadline so
		return ErrBackendTimeout
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return ErrBackendBusy
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return ErrBackendTooLarge
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, fasthttp.ErrDialTimeout) {
		return ErrBackendTimeout
	}
	return ErrBackendUnreachable
}

// stripHopByHop removes hop-by-hop headers, and those the Connection header names, as
// net/http/httputil's ReverseProxy does: they describe one connection, not the message;
// then extra (Expect, for a request).
//
// Most messages carry none of them, so one pass over the headers looks for them first
// and deletes only what is there: a delete scans every header, and the ten of them
// per message were the costliest part of a forwarded request's header handling. Names
// are compared, and the fixed ones deleted, in fasthttp's canonical form, which parsed
// names are in (TestHopByHopCanonical). Names from the Connection header are the
// client's spelling and are normalized as usual.
//
// present is what hopBits found in the headers: the pass is written out per header
// type (stripRequestHopByHop, stripResponseHopByHop) because ranging over All through
// the generic's dictionary allocates the loop body.
func stripHopByHop[H hopHeaders](h H, c *Call, extra string, present uint16) {
	if present == 0 {
		return
	}
	if present&(1<<hopConnection) != 0 {
		raw := h.DisableNormalizing()
		v := h.PeekBytes(hdrConnectionB)
		if !raw {
			h.EnableNormalizing()
		}
		if len(v) > 0 {
			c.conn = append(c.conn[:0], v...)
			forEachToken(c.conn, func(tok []byte) { h.DelBytes(tok) })
		}
	}
	raw := h.DisableNormalizing()
	for i, k := range hopByHopHeaders {
		if present&(1<<i) != 0 {
			h.Del(k)
		}
	}
	if present&extraBit != 0 {
		h.Del(extra)
	}
	if !raw {
		h.EnableNormalizing()
	}
}

const hopConnection, extraBit = 0, 1 << 15

// hopBits returns k's bit in stripHopByHop's present set: 1<<i for
// hopByHopHeaders[i], extraBit for extra, or 0. It runs for every header of every
// message, so it compares k only with the names of its length.
func hopBits(k []byte, extra string) uint16 {
	if len(k) < len(hopByLength) {
		for m := hopByLength[len(k)]; m != 0; m &= m - 1 {
			i := bits.TrailingZeros16(m)
			if string(k) == hopByHopHeaders[i] {
				return 1 << i
			}
		}
	}
	if extra != "" && string(k) == extra {
		return extraBit
	}
	return 0
}

// hopByLength[n] is the set of hopByHopHeaders of length n.
var hopByLength = func() (t [20]uint16) {
	for i, name := range hopByHopHeaders {
		t[len(name)] |= 1 << i
	}
	return t
}()

func stripRequestHopByHop(h *fasthttp.RequestHeader, c *Call, extra string) {
	var present uint16
	for k := range h.All() {
		present |= hopBits(k, extra)
	}
	stripHopByHop(h, c, extra, present)
}

func stripResponseHopByHop(h *fasthttp.ResponseHeader, c *Call) {
	var present uint16
	for k := range h.All() {
		present |= hopBits(k, "")
	}
	stripHopByHop(h, c, "", present)
}

// hopHeaders is what stripHopByHop needs of fasthttp's request and response headers.
type hopHeaders interface {
	DisableNormalizing() bool
	EnableNormalizing() bool
	PeekBytes(key []byte) []byte
	DelBytes(key []byte)
	Del(key string)
}

// forEachToken calls f for each comma-separated, space-trimmed, non-empty token of v.
// f is a non-escaping func literal at both call sites, so this does not allocate.
func forEachToken(v []byte, f func([]byte)) {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		tok := v[:i]
		for len(tok) > 0 && (tok[0] == ' ' || tok[0] == '\t') {
			tok = tok[1:]
		}
		for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
			tok = tok[:len(tok)-1]
		}
		if len(tok) > 0 && !isConnectionOption(tok) {
			f(tok)
		}
		if i == len(v) {
			break
		}
		v = v[i+1:]
	}
}

// isConnectionOption reports the Connection values that are options, not header names.
func isConnectionOption(t []byte) bool {
	return bytes.EqualFold(t, optClose) || bytes.EqualFold(t, optKeepAlive)
}

// appendXFF appends the client address to X-Forwarded-For without allocating.
func (c *Call) appendXFF(req *fasthttp.Request) {
	b := c.conn[:0]
	raw := req.Header.DisableNormalizing() // hdrXFF is canonical: see stripHopByHop
	prior := req.Header.PeekBytes(hdrXFF)
	if !raw {
		req.Header.EnableNormalizing()
	}
	if len(prior) > 0 {
		b = append(b, prior...)
		b = append(b, commaSpace...)
	}
	// A plain connection keeps its peer formatted: every request on it appends the
	// same address.
	if cache := peerIPCache(c.Ctx.Conn()); cache != nil {
		if *cache == nil {
			*cache = appendPeerIP(make([]byte, 0, len("255.255.255.255")), c.Ctx)
		}
		b = append(b, *cache...)
	} else {
		b = appendPeerIP(b, c.Ctx)
	}
	req.Header.SetCanonical(hdrXFF, b)
	c.conn = b
}

// appendPeerIP appends the TCP peer's address (0.0.0.0 for in-memory listeners);
// netip formats it without allocating, unlike net.IP.String.
func appendPeerIP(b []byte, ctx *fasthttp.RequestCtx) []byte {
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		b = ip.Unmap().AppendTo(b)
	}
	return b
}

// client returns the shared backendClient for a backend, creating it on first use. Called
// only while building a table, under the proxy's update lock.
func (b *builder) client(scheme, addr, serverName, ca string) (*backendClient, error) {
	key := clientKey(scheme, addr, ca)
	b.usedClients[key] = true
	if b.cur != nil {
		b.cur.clientKeys = append(b.cur.clientKeys, key)
	}
	if c := b.p.clients[key]; c != nil {
		return c, nil
	}
	var cfg *tls.Config
	if scheme == "https" {
		cfg = &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
		if ca != "" {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(ca)) {
				return nil, fmt.Errorf("backend CA for %s holds no PEM certificate", addr)
			}
			cfg.RootCAs = pool
		}
	}
	c := newBackendClient(addr, cfg, b.p.cfg.MaxBackendConns, b.p.cfg.MaxResponseBodySize)
	if b.p.cfg.Netpoller {
		c.dial = dialBackendNetpoller
	}
	b.p.clients[key] = c
	return c, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
