package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate/tollgate/access"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/ratelimit"
	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

// Config configures a Proxy. Zero values take the defaults named on each field.
type Config struct {
	// BaseDomain: group g is reached at g.<BaseDomain> (any port). Default "localhost".
	BaseDomain string
	// MaxBodySize limits request bodies; larger ones get 413 I413RL. Default 8 MiB.
	MaxBodySize int
	// MaxHeaderSize limits the request line plus headers (fasthttp's ReadBufferSize);
	// larger ones get 413 I413UL. Default 8 KiB, Alibaba's limit.
	MaxHeaderSize int
	// WriteBufferSize is each client connection's response buffer. A response that
	// fits is sent with one write; a larger one takes two or more. Default 16 KiB.
	WriteBufferSize int
	// MaxResponseBodySize limits backend response bodies; larger ones get 502 D502RL.
	// Default 32 MiB.
	MaxResponseBodySize int
	// MaxBackendConns caps connections per backend address. Default 1024.
	MaxBackendConns int
	// ReadTimeout, WriteTimeout and IdleTimeout bound client connections. Defaults 60s,
	// 60s and 120s.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// EventLoop serves client connections from the poller's goroutine (Linux, with
	// Netpoller off): no goroutine per connection, a backend call an event rather
	// than a parked goroutine (see eventLoop). The loop is one goroutine per
	// process, so it is for processes that run the data plane on one P, as a node's
	// workers do. Connections that are not the poller's are served as without it.
	EventLoop bool
	// LoopKeepsP lets the event loop wait for events in the kernel while it is busy,
	// keeping its P instead of parking after every batch (see poller.gatherEvents):
	// 4% less CPU per request under load. It is for a process whose clients and
	// backends are other processes, as a worker's are. A goroutine of the same process
	// that waits on the runtime's netpoller (an in-process backend or client) waits
	// until the loop parks, every eight batches or after a millisecond without events.
	// It holds for the process's whole poller while a Proxy with it serves.
	LoopKeepsP bool
	// Netpoller dials backends through the runtime's netpoller instead of the poller
	// (Linux) and turns EventLoop off: a goroutine per connection, more CPU per
	// request under load (README, "Figures"). Listeners choose for themselves:
	// NewPollListener or not.
	Netpoller bool
	// Registerer receives the data plane's metrics; nil records none.
	Registerer prometheus.Registerer
	// Ready answers /readyz for a Host that names no group. Nil means ready once the
	// first Update has been applied.
	Ready func() bool
	// NodeID is mixed into request ids so ids from different nodes differ.
	NodeID string
	// Logger receives compile problems and fasthttp's own log lines. Nil uses
	// slog.Default().
	Logger *slog.Logger

	// SignatureWindow is how far an app signature's X-Ca-Timestamp may be from the
	// node's clock, either way, and how long a nonce is remembered. Default 15 minutes.
	SignatureWindow time.Duration
	// Nonces remembers the X-Ca-Nonce values (and single-use JWT ids) already used.
	// Nil uses a signature.LocalNonceStore of NonceCapacity, which protects this node
	// only; the node swaps in the cluster-wide store here.
	Nonces signature.NonceStore
	// NonceCapacity sizes the default local nonce store. Default 1<<17.
	NonceCapacity int
	// TrustedProxies lists the proxies (CIDRs or addresses) whose X-Forwarded-For is
	// believed for the client address (IP access control, CaClientIp). Empty trusts
	// nobody: the client is the socket's peer.
	TrustedProxies []string

	// Limiter enforces traffic policies (the throttle stage); nil throttles nothing.
	// The node feeds it the policies, and SubdomainPolicy, before each Update.
	Limiter *ratelimit.Limiter
	// ConnState, if set, is fasthttp's connection state hook (a node's workers count
	// their connections with it). It is called twice per request: keep it cheap.
	ConnState func(net.Conn, fasthttp.ConnState)
	// SubdomainDailyLimit caps the calls a day a group takes on its default subdomain
	// (custom domains are not capped); 0 leaves it uncapped. The node registers the
	// matching SubdomainPolicy with the Limiter.
	SubdomainDailyLimit int64
}

// Proxy is Tollgate's data plane: a fasthttp server whose routing table is compiled from
// the replicated state and swapped in atomically on every Update.
//
// Handler, Serve, Shutdown and Index are safe for concurrent use. Update is safe for
// concurrent use too, but is meant to be called from one goroutine, after each apply.
type Proxy struct {
	cfg    Config
	base   string
	log    *slog.Logger
	server *fasthttp.Server
	ids    *idGen
	calls  sync.Pool
	table  atomic.Pointer[table]
	loaded atomic.Bool

	metrics *metrics

	verifier *signature.Verifier // app signatures; its Nonces also back JWT single use
	trusted  *access.Trusted

	// The event loop's side (Config.EventLoop): connections it serves, listeners
	// it accepts from (under mu), and where it hands connections to the server.
	stopping    atomic.Bool
	loopOpen    atomic.Int64
	loopLns     []net.Listener
	handoffLn   *chanListener
	handoffOnce sync.Once

	mu       sync.Mutex // serializes Update; guards the fields below
	clients  map[string]*backendClient
	series   map[seriesKey]*series
	problems map[string]bool
	routes   map[routeKey]*Route // the current table's compiled routes, by version
}

// defaultNonceCapacity sizes the default nonce store: about 6 MiB, the most recent
// 131,072 nonces of the window remembered (see signature.LocalNonceStore).
const defaultNonceCapacity = 1 << 17

// New returns a Proxy serving an empty table (every group unknown) until Update. It
// fails only when the metrics cannot be registered or TrustedProxies does not parse.
func New(cfg Config) (*Proxy, error) {
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = "localhost"
	}
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = 8 << 20
	}
	if cfg.MaxHeaderSize <= 0 {
		cfg.MaxHeaderSize = 8 << 10
	}
	if cfg.MaxResponseBodySize <= 0 {
		cfg.MaxResponseBodySize = defaultMaxResponseBody
	}
	if cfg.MaxBackendConns <= 0 {
		cfg.MaxBackendConns = defaultMaxConns
	}
	if cfg.WriteBufferSize <= 0 {
		cfg.WriteBufferSize = 16 << 10
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 60 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 60 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SignatureWindow <= 0 {
		cfg.SignatureWindow = signature.DefaultWindow
	}
	if cfg.NonceCapacity <= 0 {
		cfg.NonceCapacity = defaultNonceCapacity
	}
	if cfg.Nonces == nil {
		cfg.Nonces = signature.NewLocalNonceStore(cfg.SignatureWindow, cfg.NonceCapacity)
	}
	trusted, err := access.ParseTrusted(cfg.TrustedProxies)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:      cfg,
		base:     strings.Trim(strings.ToLower(cfg.BaseDomain), "."),
		log:      cfg.Logger.With("component", "proxy"),
		ids:      newIDGen(cfg.NodeID),
		clients:  map[string]*backendClient{},
		series:   map[seriesKey]*series{},
		problems: map[string]bool{},
		verifier: &signature.Verifier{Window: cfg.SignatureWindow, Nonces: cfg.Nonces},
		trusted:  trusted,
	}
	p.calls.New = func() any { return &Call{} }
	if cfg.Registerer != nil {
		m, err := newMetrics(cfg.Registerer)
		if err != nil {
			return nil, fmt.Errorf("proxy metrics: %w", err)
		}
		p.metrics = m
	}
	p.server = &fasthttp.Server{
		Handler:                      p.Handler,
		ErrorHandler:                 p.errorHandler,
		Name:                         serverName,
		MaxRequestBodySize:           cfg.MaxBodySize,
		ReadBufferSize:               cfg.MaxHeaderSize,
		WriteBufferSize:              cfg.WriteBufferSize,
		ReadTimeout:                  cfg.ReadTimeout,
		WriteTimeout:                 cfg.WriteTimeout,
		IdleTimeout:                  cfg.IdleTimeout,
		DisablePreParseMultipartForm: true, // bodies are forwarded, never parsed here
		// The handler keeps its own clock (Call.Start); fasthttp need not read one for
		// RequestCtx.Time on every request.
		LazyRequestTime:       true,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                fasthttpLogger{p.log},
		ConnState:             cfg.ConnState,
	}
	p.mu.Lock()
	p.table.Store(p.newBuilder().build(nil))
	p.mu.Unlock()
	return p, nil
}

// Update compiles the routing table from s and swaps it in atomically: requests already
// running finish on the table they started with, later ones see the new one whole.
// Backend clients and metric children the new table no longer uses are released.
// Problems (a route that cannot be compiled, two groups claiming a host) are logged
// once each and never stop the rest of the table. s must not be modified afterwards
// (fsm publishes immutable states). Blocks for the compile; safe for concurrent use.
func (p *Proxy) Update(s *fsm.State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.newBuilder()
	t := b.build(s)
	p.table.Store(t)
	p.routes = b.routes
	p.loaded.Store(true)

	for k, c := range p.clients {
		if !b.usedClients[k] {
			delete(p.clients, k)
			c.CloseIdleConnections() // in-flight calls on the old table still finish
		}
	}
	p.dropSeries(b.usedSeries)

	seen := make(map[string]bool, len(b.problems))
	for _, pr := range b.problems {
		seen[pr] = true
		if !p.problems[pr] {
			p.log.Warn("route table problem", "index", t.index, "problem", pr)
		}
	}
	p.problems = seen
}

func (p *Proxy) newBuilder() *builder {
	return &builder{p: p, usedClients: map[string]bool{}, usedSeries: map[seriesKey]bool{}, routes: map[routeKey]*Route{}, patterns: map[string][]segment{}}
}

// Index returns the raft index of the state the proxy serves (0 before any Update).
// Safe for concurrent use.
func (p *Proxy) Index() uint64 { return p.table.Load().index }

// Serve accepts connections on ln and serves them until Shutdown; it blocks and returns
// nil after a Shutdown, or the listener's error. Its TCP connections move their
// deadline timers rarely (see fastConn); for TLS, build the TLS listener over
// NewListener(ln) so that the connections under TLS do too. With Config.EventLoop,
// the poller's connections (a NewPollListener's) are served by the event loop, the
// others by fasthttp's server.
func (p *Proxy) Serve(ln net.Listener) error {
	if p.cfg.EventLoop && !p.cfg.Netpoller {
		return p.serveLoop(ln)
	}
	return p.serveServer(ln)
}

// serverName is the data plane's Server header.
const serverName = "Tollgate"

// serveServer serves ln with fasthttp's server: a goroutine per connection.
func (p *Proxy) serveServer(ln net.Listener) error {
	err := p.server.Serve(NewListener(ln))
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, closes idle ones and waits for in-flight
// requests to finish, or for ctx to end (then it returns ctx's error). Blocks.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.stopping.Store(true)
	lns := p.loopLns
	p.loopLns = nil
	p.mu.Unlock()
	for _, ln := range lns {
		_ = ln.Close()
	}
	loopErr := p.drainLoop(ctx)
	err := p.server.ShutdownWithContext(ctx)
	p.handoffOnce.Do(func() {}) // no hand-off starts a server from now on
	if p.handoffLn != nil {
		_ = p.handoffLn.Close()
	}
	if err == nil {
		err = loopErr
	}
	p.mu.Lock()
	for _, c := range p.clients {
		c.CloseIdleConnections()
	}
	p.mu.Unlock()
	return err
}

// Handler serves one request through the compiled pipeline: route, then the route's
// steps, then record. It is fasthttp's RequestHandler, usable without Serve (tests,
// embedding), and does not allocate on a routed anonymous request. Safe for concurrent
// use.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) {
	c := p.begin(ctx)
	p.finish(c, p.serve(c, p.table.Load()))
}

// begin starts a request: a Call from the pool, its clock and its id.
func (p *Proxy) begin(ctx *fasthttp.RequestCtx) *Call {
	c := p.calls.Get().(*Call)
	p.start(c, ctx)
	return c
}

// start starts a request on c, a reset Call.
func (p *Proxy) start(c *Call, ctx *fasthttp.RequestCtx) {
	c.Ctx = ctx
	c.Start = time.Now()
	p.ids.next(&c.reqID)
}

// finish ends a served request and puts its Call back in the pool.
func (p *Proxy) finish(c *Call, s *series) {
	p.end(c, s)
	p.calls.Put(c)
}

// end ends a served request: its id on the answer, its metrics under s. It leaves c
// reset, for the next start.
func (p *Proxy) end(c *Call, s *series) {
	resp := &c.Ctx.Response
	// Set last: an http backend's answer replaces the whole response.
	resp.Header.SetCanonical(hdrRequestID, c.reqID[:])
	s.record(resp.StatusCode(), len(resp.Body()), time.Since(c.Start), c.BackendTime)
	c.reset()
}

// serve routes the request and runs the route's steps. It returns the series the
// request is recorded under.
func (p *Proxy) serve(c *Call, t *table) *series {
	ctx := c.Ctx
	c.table = t
	c.host = normalizeHost(c.host[:0], ctx.Request.Header.Host())
	g := t.hosts[string(c.host)]
	if g == nil {
		p.serveNode(c)
		return t.unrouted
	}

	si := len(fsm.Stages) - 1 // RELEASE
	if v := ctx.Request.Header.PeekBytes(hdrStage); len(v) > 0 {
		if si = stageIndex(v); si < 0 {
			c.FailDetail(ErrInvalidStage, clip(v))
			return g.unrouted
		}
	}
	c.Stage = fsm.Stages[si]
	c.si = si

	c.path = append(c.path[:0], ctx.Path()...)
	m := methodIndex(ctx.Method())
	r, near := g.stages[si].lookup(m, c.path, &c.params)
	if r == nil {
		var kp params
		if k, _ := g.known.lookup(m, c.path, &kp); k != nil {
			c.FailDetail(ErrStageNotDeployed, string(c.Stage))
		} else if near != nil {
			c.Fail(ErrMethodNotAllowed)
			ctx.Response.Header.Set(fasthttp.HeaderAllow, near.allow)
		} else {
			c.Fail(ErrAPINotFound)
		}
		return g.unrouted
	}
	c.Route = r
	for _, step := range r.steps {
		if !step(c) {
			break
		}
	}
	return r.series
}

// serveNode answers for a Host that names no group: the load balancer's health checks,
// and Invalid Domain for everything else.
func (p *Proxy) serveNode(c *Call) {
	ctx := c.Ctx
	path := ctx.Path()
	switch {
	case string(path) == "/healthz":
		ctx.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBodyString(`{"status":"ok"}` + "\n")
	case string(path) == "/readyz":
		ctx.SetContentTypeBytes(contentTypeJSON)
		if p.ready() {
			ctx.SetBodyString(`{"status":"ready"}` + "\n")
		} else {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString(`{"status":"not ready"}` + "\n")
		}
	default:
		c.FailDetail(ErrDomainNotFound, clip(c.host))
	}
}

func (p *Proxy) ready() bool {
	if p.cfg.Ready != nil {
		return p.cfg.Ready()
	}
	return p.loaded.Load()
}

// errorHandler turns fasthttp's own request errors (body or headers too large, bad
// HTTP, slow clients) into answers from the error table, with a request id.
func (p *Proxy) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	c := p.begin(ctx)
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		c.Fail(ErrBodyTooLarge)
	case errors.As(err, &small):
		c.Fail(ErrURLTooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		c.Fail(ErrRequestTimeout)
	default:
		c.Fail(ErrBadRequest)
	}
	ctx.Response.Header.SetCanonical(hdrRequestID, c.reqID[:])
	if t := p.table.Load(); t != nil {
		t.unrouted.record(ctx.Response.StatusCode(), len(ctx.Response.Body()), time.Since(c.Start), 0)
	}
	c.reset()
	p.calls.Put(c)
}

// stageIndex matches an X-Ca-Stage value case-insensitively without allocating.
func stageIndex(v []byte) int {
	v = bytes.TrimSpace(v)
	for i, s := range stageNames {
		if bytes.EqualFold(v, s) {
			return i
		}
	}
	return -1
}

var stageNames = func() (n [len(fsm.Stages)][]byte) {
	for i, s := range fsm.Stages {
		n[i] = []byte(s)
	}
	return n
}()

// clip returns at most 64 bytes of v as a string, for error details that echo input.
func clip(v []byte) string {
	if len(v) > 64 {
		v = v[:64]
	}
	return string(v)
}

// fasthttpLogger routes fasthttp's log lines to slog at debug level: they report
// clients that misbehave (resets, oversized requests already answered through
// errorHandler), which is noise at a gateway's normal log level.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	if f.l.Enabled(context.Background(), slog.LevelDebug) {
		f.l.Debug(fmt.Sprintf(format, args...))
	}
}

// handOff gives a connection to fasthttp's server (the event loop's way out for what
// it does not serve itself), which counts and shuts it down as one it accepted.
func (p *Proxy) handOff(c net.Conn) {
	p.handoffOnce.Do(func() {
		p.handoffLn = newChanListener(c.LocalAddr())
		go func() { _ = p.server.Serve(p.handoffLn) }()
	})
	if p.handoffLn == nil || !p.handoffLn.push(c) {
		_ = c.Close() // shutting down
	}
}

// chanListener hands out the connections pushed to it.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
