package param

import (
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

// fiveParams is the benchmark API of issue 6: five verified parameters over four
// locations, three of them mapped elsewhere, plus a constant and system parameters.
func fiveParams() *fsm.APIDef {
	return &fsm.APIDef{
		Path: "/cities/[city]",
		Params: []fsm.Param{
			{Name: "city", In: fsm.InPath, Required: true, Regex: "^[a-z]+$"},
			{Name: "days", In: fsm.InQuery, Type: "int", Min: ptr(1.0), Max: ptr(14.0), Default: ptr("3")},
			{Name: "unit", In: fsm.InQuery, Enum: []string{"c", "f"}},
			{Name: "X-Token", In: fsm.InHeader, Required: true, MinLength: ptr(8), MaxLength: ptr(64)},
			{Name: "qty", In: fsm.InForm, Type: "long", Min: ptr(1.0)},
		},
		Backend: fsm.Backend{
			Type: "http", Path: "/v2/weather/[city]",
			Map: []fsm.ParamMapping{
				{Param: "days", In: "header", Name: "X-Days"},
				{Param: "X-Token", In: "query", Name: "token"},
				{Param: "qty", In: "header", Name: "X-Qty"},
			},
			Constants: []fsm.ConstantParam{{Name: "X-Source", In: "header", Value: "tollgate"}},
			System: []fsm.SystemParam{
				{Param: "CaClientIp", In: "header", Name: "X-Client-Ip"},
				{Param: "CaRequestId", In: "header", Name: "X-Ca-Request-Id"},
			},
		},
	}
}

type fixture struct {
	plan *Plan
	tmpl *fasthttp.Request
	req  fasthttp.Request
	pv   [][]byte
	sys  System
	s    Scratch
	path []byte
}

func newFixture(tb testing.TB, def *fsm.APIDef, uri string, headers [][2]string, ct, body string, names ...string) *fixture {
	f := &fixture{
		plan: mustCompile(tb, def, names...),
		tmpl: request(tb, "POST", uri, headers, ct, body),
		sys:  System{ClientIP: []byte("203.0.113.9"), RequestID: []byte("5f0e1c2a-77b1-4c4e-9d1e-0a1b2c3d4e5f")},
	}
	if len(names) > 0 {
		f.pv = [][]byte{[]byte("paris")}
	}
	return f
}

// run resets the request from the template (the proxy gets a fresh one per call) and
// runs verification, conversion and the backend path.
func (f *fixture) run(tb testing.TB) {
	f.tmpl.CopyTo(&f.req)
	if err := f.plan.Apply(&f.req, f.pv, &f.sys, &f.s); err != nil {
		tb.Fatal(err)
	}
	f.path = f.plan.BackendPath(f.path[:0], f.pv, &f.sys, &f.s)
}

func fiveFixture(tb testing.TB) *fixture {
	return newFixture(tb, fiveParams(), "/cities/paris?days=5&unit=c&debug=1",
		[][2]string{{"X-Token", "abcdefgh12345678"}, {"X-Junk", "x"}, {"User-Agent", "bench"}},
		"application/x-www-form-urlencoded", "qty=2&extra=1", "city")
}

func BenchmarkApplyFiveParams(b *testing.B) {
	f := fiveFixture(b)
	b.ReportAllocs()
	for b.Loop() {
		f.run(b)
	}
}

// BenchmarkCopyRequest is the cost of the benchmark's own request reset, to subtract.
func BenchmarkCopyRequest(b *testing.B) {
	f := fiveFixture(b)
	b.ReportAllocs()
	for b.Loop() {
		f.tmpl.CopyTo(&f.req)
	}
}

func BenchmarkApplyNoParams(b *testing.B) {
	f := newFixture(b, &fsm.APIDef{Path: "/x"}, "/x?a=1&b=2", [][2]string{{"X-Custom", "1"}}, "", "")
	b.ReportAllocs()
	for b.Loop() {
		f.run(b)
	}
}

func BenchmarkApplyFiveParamsGuard(b *testing.B) {
	def := fiveParams()
	def.Guard = []string{"injection"}
	f := newFixture(b, def, "/cities/paris?days=5&unit=c&debug=1",
		[][2]string{{"X-Token", "abcdefgh12345678"}}, "application/x-www-form-urlencoded", "qty=2", "city")
	b.ReportAllocs()
	for b.Loop() {
		f.run(b)
	}
}

func BenchmarkApplyJSONSchema(b *testing.B) {
	def := &fsm.APIDef{Path: "/orders", Body: &fsm.BodySpec{
		Schema: `{"type":"object","required":["qty"],"properties":{"qty":{"type":"integer","minimum":1}}}`,
	}}
	f := newFixture(b, def, "/orders", nil, "application/json", `{"qty":2,"sku":"A-1"}`)
	b.ReportAllocs()
	for b.Loop() {
		f.run(b)
	}
}

// BenchmarkApplyRefused measures a refused request: errors are prebuilt.
func BenchmarkApplyRefused(b *testing.B) {
	f := newFixture(b, fiveParams(), "/cities/paris?days=15", [][2]string{{"X-Token", "abcdefgh12345678"}}, "", "", "city")
	b.ReportAllocs()
	for b.Loop() {
		f.tmpl.CopyTo(&f.req)
		if f.plan.Apply(&f.req, f.pv, &f.sys, &f.s) == nil {
			b.Fatal("accepted")
		}
	}
}
