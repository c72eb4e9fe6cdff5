package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/tollgate/tollgate/ratelimit"
	"github.com/valyala/fasthttp"
)

// env is what scenarios know about the run: the backend every target
// forwards to and the Host and credentials Tollgate is configured with.
type env struct {
	backend   string // host:port of the fixed backend
	host      string // Host header: <group>.<base-domain>
	appKey    string // the bench app's key and secret (signing scenarios)
	appSecret string
}

const (
	benchGroup  = "bench"
	baseDomain  = "localhost"
	routeAPIs   = 10000 // APIs in the routing-table scenario
	benchAppKey = "204000001"
)

// buildFunc fills req (freshly reset) for one call. It belongs to one
// connection, so it may keep state (a signer, a counter) without locks.
type buildFunc func(req *fasthttp.Request)

// scenario is one row group of the report: one kind of request, measured
// against every target.
type scenario struct {
	name string
	desc string
	// body is the byte length of a correct 200 answer (0: any length).
	body int
	// config appends this scenario's part of Tollgate's declarative file
	// (YAML). Each scenario is applied alone, before its rounds.
	config func(e *env, y *strings.Builder)
	// newBuilder returns the request builder of one connection.
	newBuilder func(e *env, conn int) buildFunc
	// signs: every call carries a fresh nonce, which the node keeps for 15 minutes
	// (see nonceCapacityFor).
	signs bool
}

// scenarios is the table; add an entry per hot-path feature as it lands.
// Order is report order.
var scenarios = []scenario{
	{
		name: "anon-64B",
		desc: "anonymous pass-through, 64-byte JSON answer",
		body: 64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			httpAPI(y, e, "json", "/json", "/json", "auth: anonymous")
		},
		newBuilder: staticGET("/json"),
	},
	{
		// Against anon-64B in the same run: the cost of a quota check on every call
		// (one API counter; anonymous calls have no app or user). The limit is far
		// above what a run reaches, so every call is admitted and forwarded.
		name: "quota",
		desc: "anon-64B with a traffic policy (API quota checked on every call)",
		body: 64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			httpAPI(y, e, "quota", "/quota/json", "/json", "auth: anonymous\n        traffic: bench-quota")
			y.WriteString("traffic:\n  - {name: bench-quota, window: minute, api: 1000000000}\n")
		},
		newBuilder: staticGET("/quota/json"),
	},
	{
		name: "anon-4K",
		desc: "anonymous pass-through, 4 KiB answer",
		body: 4096,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			httpAPI(y, e, "large", "/4k", "/4k", "auth: anonymous")
		},
		newBuilder: staticGET("/4k"),
	},
	{
		name: "mock-64B",
		desc: "mock backend in Tollgate (others: the real backend), 64 B",
		body: 64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			fmt.Fprintf(y, "      - name: mock\n        method: GET\n        path: /mock\n        auth: anonymous\n")
			fmt.Fprintf(y, "        backend: {type: mock, status: 200, body: '%s', headers: {Content-Type: application/json}}\n", smallBody)
			y.WriteString("        deploy: [RELEASE]\n")
		},
		newBuilder: staticGET("/mock"),
	},
	{
		name: "routes-10k",
		desc: "anonymous, 10,000 APIs in one group, requests spread over all",
		body: 64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			for i := range routeAPIs {
				fmt.Fprintf(y, "      - {name: r%05d, method: GET, path: /r/%05d/items, auth: anonymous, "+
					"backend: {type: http, url: 'http://%s', path: /json, timeout: 3s}, deploy: [RELEASE]}\n",
					i, i, e.backend)
			}
		},
		newBuilder: func(e *env, conn int) buildFunc {
			i := conn * 7919
			var path []byte
			return func(req *fasthttp.Request) {
				i = (i + 7919) % routeAPIs
				path = fmt.Appendf(path[:0], "/r/%05d/items", i)
				req.Header.SetMethod(fasthttp.MethodGet)
				req.SetRequestURIBytes(path)
				req.Header.SetHost(e.host)
			}
		},
	},
	{
		name:  "app-sign",
		signs: true,
		desc:  "app signature (HmacSHA256), fresh nonce per request",
		body:  64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			httpAPI(y, e, "signed", "/signed/json", "/json", "auth: app")
			benchApp(y, e, "signed", "")
		},
		newBuilder: signedGET("/signed/json"),
	},
	{
		name: "params",
		desc: "anonymous + 5 verified and mapped parameters + backend signature (issue 6's figure)",
		body: 64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			y.WriteString(`      - name: params
        method: GET
        path: /params/[item]
        auth: anonymous
        params:
` + fiveParams)
			fmt.Fprintf(y, "        backend: {type: http, url: 'http://%s', path: /json, timeout: 3s, signature: bench-key, "+
				"map: [{param: days, in: header, name: X-Days}, {param: unit, in: query, name: u}]}\n", e.backend)
			y.WriteString(`        deploy: [RELEASE]
backendKeys:
  - {name: bench-key, key: BenchKey, secret: BenchSecret}
`)
		},
		newBuilder: func(e *env, conn int) buildFunc {
			return func(req *fasthttp.Request) {
				req.Header.SetMethod(fasthttp.MethodGet)
				req.SetRequestURI("/params/paris42?days=5&unit=c&lang=en")
				req.Header.SetHost(e.host)
				req.Header.Set("X-Trace", "bench")
			}
		},
	},
	{
		name:  "full",
		signs: true,
		desc:  "signature + quota + 5 verified parameters + backend signature",
		body:  64,
		config: func(e *env, y *strings.Builder) {
			groupHeader(y, benchGroup)
			y.WriteString(`      - name: full
        method: GET
        path: /full/[item]
        auth: app
        params:
` + fiveParams + `        traffic: bench-quota
`)
			fmt.Fprintf(y, "        backend: {type: http, url: 'http://%s', path: /json, timeout: 3s, signature: bench-key}\n", e.backend)
			y.WriteString("        deploy: [RELEASE]\n")
			benchApp(y, e, "full", `traffic:
  - {name: bench-quota, window: minute, api: 1000000000, app: 1000000000, user: 1000000000}
backendKeys:
  - {name: bench-key, key: BenchKey, secret: BenchSecret}
`)
		},
		newBuilder: func(e *env, conn int) buildFunc {
			s := newSigner(e.appKey, e.appSecret)
			return func(req *fasthttp.Request) {
				req.Header.SetMethod(fasthttp.MethodGet)
				req.SetRequestURI("/full/paris42?days=5&unit=c&lang=en")
				req.Header.SetHost(e.host)
				req.Header.Set("Accept", "application/json")
				req.Header.Set("X-Trace", "bench")
				s.sign(req, time.Now())
			}
		},
	},
}

// fiveParams declares the five verified parameters of the params and full scenarios.
const fiveParams = `          - {name: item, in: path, type: string, required: true, regex: "^[a-z0-9]+$"}
          - {name: days, in: query, type: int, min: 1, max: 14, default: 3}
          - {name: unit, in: query, type: string, enum: [c, f]}
          - {name: lang, in: query, type: string, maxLength: 8}
          - {name: X-Trace, in: header, type: string, required: true}
`

// staticGET builds the same anonymous GET for every call.
func staticGET(path string) func(e *env, conn int) buildFunc {
	return func(e *env, conn int) buildFunc {
		return func(req *fasthttp.Request) {
			req.Header.SetMethod(fasthttp.MethodGet)
			req.SetRequestURI(path)
			req.Header.SetHost(e.host)
		}
	}
}

// signedGET builds a GET signed with the bench app's secret, with a fresh
// nonce and timestamp per call.
func signedGET(path string) func(e *env, conn int) buildFunc {
	return func(e *env, conn int) buildFunc {
		s := newSigner(e.appKey, e.appSecret)
		return func(req *fasthttp.Request) {
			req.Header.SetMethod(fasthttp.MethodGet)
			req.SetRequestURI(path)
			req.Header.SetHost(e.host)
			req.Header.Set("Accept", "application/json")
			s.sign(req, time.Now())
		}
	}
}

func groupHeader(y *strings.Builder, name string) {
	fmt.Fprintf(y, "groups:\n  - name: %s\n    apis:\n", name)
}

// httpAPI appends a GET API forwarding path to backendPath on the backend.
func httpAPI(y *strings.Builder, e *env, name, path, backendPath, auth string) {
	fmt.Fprintf(y, "      - name: %s\n        method: GET\n        path: %s\n        %s\n", name, path, auth)
	fmt.Fprintf(y, "        backend: {type: http, url: 'http://%s', path: %s, timeout: 3s}\n", e.backend, backendPath)
	y.WriteString("        deploy: [RELEASE]\n")
}

// benchApp appends the bench app, its grant to api, and extra top-level YAML.
func benchApp(y *strings.Builder, e *env, api, extra string) {
	fmt.Fprintf(y, "apps:\n  - {name: bench-app, owner: bench, key: '%s', secret: '%s'}\n", e.appKey, e.appSecret)
	fmt.Fprintf(y, "grants:\n  - {app: bench-app, api: %s/%s, stages: [RELEASE]}\n", benchGroup, api)
	y.WriteString(extra)
}

// selectScenarios returns the scenarios whose name contains any of the
// comma-separated filters (all when filter is empty).
func selectScenarios(filter string) []scenario {
	if strings.TrimSpace(filter) == "" {
		return scenarios
	}
	var out []scenario
	for _, s := range scenarios {
		for _, f := range strings.Split(filter, ",") {
			if f = strings.TrimSpace(f); f != "" && strings.Contains(s.name, f) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// benchSignRatePerCPU bounds the signed calls a second one target takes per CPU of
// this machine (two CPUs here take ~26,000 each; the default table holds 4.7 million,
// a margin of its own), for sizing the nonce table.
const benchSignRatePerCPU = 30_000

// nonceCapacityFor returns the --nonce-capacity a run needs, or 0 when the node's
// default holds every nonce it signs. A full table refuses signed calls (A400NU)
// until its nonces expire, 15 minutes on: a 30-round run of `full` filled the default
// one, and its last rounds measured refusals. The gate command (6 rounds of two
// signed scenarios) stays within the default, so it measures the node as it ships.
func nonceCapacityFor(o options, scs []scenario, cpus int) int {
	segments := 0
	for _, s := range scs {
		if s.signs {
			segments += o.Rounds
			if o.Profile {
				segments++ // one more, unreported segment while profiling
			}
		}
	}
	need := int(float64(segments) * (o.Warmup + o.Duration).Seconds() * benchSignRatePerCPU * float64(cpus))
	if need <= ratelimit.DefaultMaxNonces {
		return 0
	}
	return need
}
