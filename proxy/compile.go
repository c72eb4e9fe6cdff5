package proxy

import (
	"fmt"
	"strings"

	"github.com/tollgate/tollgate/access"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/param"
	"github.com/tollgate/tollgate/signature"
)

// Route is one API version served in one stage, compiled: its pipeline steps and
// everything they read, so serving a request touches no shared map and takes no lock.
// A Route is immutable once its table is published; it is safe for concurrent use.
type Route struct {
	Group   string
	API     string
	Stage   fsm.Stage
	Version int
	// Def is the served version's definition. Shared and read-only.
	Def *fsm.APIDef

	ref        string      // GROUP/API, the key of the app's grants
	paramNames []string    // path parameters in pattern order; Call.params follows it
	plan       *param.Plan // parameter verification and conversion; nil when none declared
	apiName    []byte      // CaApiName
	steps      []Step
	series     *series
	method     string    // normalized method, for re-placing a reused route
	segs       []segment // parsed pattern, likewise
	clientKeys []string  // backend clients the steps hold, kept while the route lives
}

// routeKey identifies an immutable deployed version: a route compiled for it can be
// reused by the next table (see stage.versionOnly).
type routeKey struct {
	group, api string
	stage      fsm.Stage
	number     int
	deployedAt int64
}

// table is one compiled config version. Requests load it once from the proxy's
// atomic.Pointer and use only it, so each request sees one whole version.
type table struct {
	index    uint64
	hosts    map[string]*groupTable // lower-cased host without port
	unrouted *series                // group="" api="" stage=""
	routes   int

	// State outside the API versions, compiled per table (see app).
	apps        map[string]*app                  // by AppKey
	codes       map[string]*app                  // by AppCode
	backendKeys map[string]*signature.BackendKey // by name
	ipPolicies  map[string]*access.IPRules       // by name
	trusted     *access.Trusted                  // Config.TrustedProxies
}

// groupTable routes one group: one router per stage, plus a router of every API the
// group has in any stage (or none), which tells "not deployed in this stage" from "no
// such API".
type groupTable struct {
	name     string
	stages   [len(fsm.Stages)]*router
	known    *router
	unrouted *series // group=name api="" stage=""
}

// builder compiles a table from a state. It runs under the proxy's update lock and
// records which shared resources (backend clients, metric children) the new table
// uses, so the ones it no longer uses can be released after the swap.
type builder struct {
	p           *Proxy
	usedClients map[string]bool
	usedSeries  map[seriesKey]bool
	problems    []string
	cur         *Route               // the route being compiled, for its clientKeys
	routes      map[routeKey]*Route  // routes of the new table, reusable by the next
	patterns    map[string][]segment // parsed paths; segments are shared and read-only
	state       *fsm.State           // the state being compiled, for existence checks only
}

func (b *builder) problem(format string, args ...any) {
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

func (b *builder) build(s *fsm.State) *table {
	t := &table{hosts: map[string]*groupTable{}, trusted: b.p.trusted}
	t.unrouted = b.seriesFor(seriesKey{})
	if s == nil {
		return t
	}
	t.index = s.Index
	b.compileState(t, s)
	b.state = s
	reuse := reusable()
	groups := map[string]*groupTable{}
	for _, name := range fsm.SortedKeys(s.Groups) {
		g := s.Groups[name]
		gt := &groupTable{name: name, known: &router{}}
		for i := range gt.stages {
			gt.stages[i] = &router{}
		}
		gt.unrouted = b.seriesFor(seriesKey{group: name})
		groups[name] = gt
		b.addHost(t, name+"."+b.p.base, gt)
		for _, d := range g.Domains {
			b.addHost(t, d, gt)
		}
	}
	for _, ref := range fsm.SortedKeys(s.APIs) {
		a := s.APIs[ref]
		gt := groups[a.Group]
		if gt == nil {
			b.problem("api %s: group %q does not exist", ref, a.Group)
			continue
		}
		known := &Route{Group: a.Group, API: a.Name}
		b.addKnown(gt, &a.Def, known)
		for si, st := range fsm.Stages {
			v, ok := s.Served(ref, st)
			if !ok {
				continue
			}
			b.addKnown(gt, &v.Def, known)
			rk := routeKey{a.Group, a.Name, st, v.Number, v.DeployedAt.UnixNano()}
			if r := b.p.routes[rk]; r != nil && reuse {
				b.keep(rk, r)
				if err := gt.stages[si].add(r.method, r.segs, r); err != nil {
					b.problem("api %s in %s: %v", ref, st, err)
					continue
				}
				t.routes++
				continue
			}
			method, segs, r, err := b.route(a.Group, a.Name, st, v)
			if err == nil {
				b.routes[rk] = r
			}
			if err != nil {
				b.problem("api %s in %s (version %d): %v", ref, st, v.Number, err)
				if segs == nil && method == "" {
					continue // cannot even be placed; it answers "not deployed"
				}
				// A version that cannot be compiled still owns its path: it answers
				// an internal error rather than falling through to another API.
				r = &Route{Group: a.Group, API: a.Name, Stage: st, Version: v.Number,
					series: b.seriesFor(seriesKey{a.Group, a.Name, string(st)}),
					steps:  []Step{failStep(ErrInternal, "api version failed to compile")}}
			}
			if err := gt.stages[si].add(method, segs, r); err != nil {
				b.problem("api %s in %s: %v", ref, st, err)
				continue
			}
			t.routes++
		}
	}
	return t
}

// keep carries a route compiled for an earlier table into this one, with the shared
// resources it holds.
func (b *builder) keep(k routeKey, r *Route) {
	b.routes[k] = r
	for _, ck := range r.clientKeys {
		b.usedClients[ck] = true
	}
	if r.series != nil {
		b.usedSeries[seriesKey{r.Group, r.API, string(r.Stage)}] = true
	}
}

func failStep(e *ErrorCode, detail string) Step {
	return func(c *Call) bool { return c.FailDetail(e, detail) }
}

func (b *builder) addKnown(gt *groupTable, def *fsm.APIDef, r *Route) {
	segs, err := b.pattern(def.Path)
	if err != nil {
		return
	}
	gt.known.insert(normMethod(def.Method), segs, r) // duplicates are expected and harmless
}

// pattern parses an API path once per build; most paths recur (current definition and
// each stage's version).
func (b *builder) pattern(p string) ([]segment, error) {
	if segs, ok := b.patterns[p]; ok {
		return segs, nil
	}
	segs, err := parsePattern(p)
	if err == nil {
		b.patterns[p] = segs
	}
	return segs, err
}

func normMethod(m string) string {
	m = strings.ToUpper(strings.TrimSpace(m))
	if m == "" {
		return "ANY"
	}
	return m
}

func (b *builder) addHost(t *table, host string, gt *groupTable) {
	h := string(normalizeHost(nil, []byte(host)))
	if h == "" {
		return
	}
	if prev := t.hosts[h]; prev != nil && prev != gt {
		b.problem("host %s is claimed by groups %s and %s; %s keeps it", h, prev.name, gt.name, prev.name)
		return
	}
	t.hosts[h] = gt
}

// route compiles one served version. It returns the method and pattern even when the
// pipeline fails to build, so the caller can still place the route.
func (b *builder) route(group, api string, st fsm.Stage, v fsm.Version) (string, []segment, *Route, error) {
	def := v.Def
	method := normMethod(def.Method)
	if method != "ANY" && methodIndex([]byte(method)) < 0 {
		return "", nil, nil, fmt.Errorf("method %q is not one of GET POST PUT DELETE PATCH HEAD OPTIONS ANY", def.Method)
	}
	segs, err := b.pattern(def.Path)
	if err != nil {
		return "", nil, nil, err
	}
	r := &Route{Group: group, API: api, Stage: st, Version: v.Number, Def: &def, method: method, segs: segs,
		ref: fsm.APIRef(group, api), apiName: []byte(api)}
	b.cur = r
	defer func() { b.cur = nil }()
	for _, s := range segs {
		if s.param != "" {
			r.paramNames = append(r.paramNames, s.param)
		}
	}
	r.series = b.seriesFor(seriesKey{group, api, string(st)})
	for _, stg := range pipeline {
		step, err := stg.build(b, r, &def)
		if err != nil {
			return method, segs, nil, fmt.Errorf("%s: %v", stg.name, err)
		}
		if step != nil {
			r.steps = append(r.steps, step)
		}
	}
	return method, segs, r, nil
}

// normalizeHost appends host lower-cased, without its port and without a trailing dot,
// so that "Weather.LocalHost:8080" and "weather.localhost." name the same group. It
// does not allocate beyond growing dst.
func normalizeHost(dst, host []byte) []byte {
	if len(host) > 0 && host[0] == '[' { // [v6]:port
		if i := indexByte(host, ']'); i > 0 {
			host = host[:i+1]
		}
	} else if i := lastIndexByte(host, ':'); i >= 0 && indexByte(host, ':') == i {
		host = host[:i]
	}
	for len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1]
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}
