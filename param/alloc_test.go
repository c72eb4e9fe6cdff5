//go:build !race

package param

import (
	"net/url"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

// TestApplyZeroAllocs guards the hot path: five verified and mapped parameters over
// path, query, header and form, with constants, system parameters and the backend
// path, allocate nothing per request once the Scratch has grown.
func TestApplyZeroAllocs(t *testing.T) {
	f := fiveFixture(t)
	f.run(t)
	// The conversion really happened, so the figure below measures real work.
	if got := string(f.path); got != "/v2/weather/paris" {
		t.Fatalf("backend path %q", got)
	}
	q, _ := url.ParseQuery(string(f.req.URI().QueryString()))
	if q.Get("unit") != "c" || q.Get("token") != "abcdefgh12345678" || q.Has("debug") || q.Has("days") {
		t.Fatalf("backend query %v", q)
	}
	for k, want := range map[string]string{"X-Days": "5", "X-Qty": "2", "X-Source": "tollgate", "X-Client-Ip": "203.0.113.9", "X-Junk": "", "X-Token": ""} {
		if got := string(f.req.Header.Peek(k)); got != want {
			t.Fatalf("header %s = %q, want %q", k, got, want)
		}
	}
	if len(f.req.Body()) != 0 {
		t.Fatalf("form body %q: qty moved to a header, extra undeclared", f.req.Body())
	}
	if n := testing.AllocsPerRun(200, func() { f.run(t) }); n != 0 {
		t.Fatalf("Apply + BackendPath: %v allocs/op, want 0", n)
	}
	// A refused request allocates nothing either: its error was built by Compile.
	r := newFixture(t, fiveParams(), "/cities/paris?days=15", [][2]string{{"X-Token", "abcdefgh12345678"}}, "", "", "city")
	if n := testing.AllocsPerRun(200, func() {
		r.tmpl.CopyTo(&r.req)
		if r.plan.Apply(&r.req, r.pv, &r.sys, &r.s) == nil {
			t.Fatal("accepted")
		}
	}); n != 0 {
		t.Fatalf("refused Apply: %v allocs/op, want 0", n)
	}
	// The pass-through of an API without parameters.
	np := newFixture(t, &fsm.APIDef{Path: "/x"}, "/x?a=1", [][2]string{{"X-Custom", "1"}}, "", "")
	if n := testing.AllocsPerRun(200, func() { np.run(t) }); n != 0 {
		t.Fatalf("no-params Apply: %v allocs/op, want 0", n)
	}
}
