package proxy

import (
	"strings"
	"testing"
)

// testRouter builds a router from "METHOD /pattern" lines; each route's API name is
// its line, so a lookup tells which one matched.
func testRouter(t *testing.T, lines ...string) *router {
	t.Helper()
	r := &router{}
	for _, l := range lines {
		method, pattern, _ := strings.Cut(l, " ")
		segs, err := parsePattern(pattern)
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		rt := &Route{API: l}
		for _, s := range segs {
			if s.param != "" {
				rt.paramNames = append(rt.paramNames, s.param)
			}
		}
		if err := r.add(method, segs, rt); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	return r
}

func TestRouterLookup(t *testing.T) {
	r := testRouter(t,
		"GET /",
		"GET /cities/[city]",
		"GET /cities/london",
		"GET /cities/[city]/days/[n]",
		"GET /cities/london/days/today",
		"ANY /any/[x]",
		"POST /any/[x]",
		"GET /a/",
		"GET /files/[name]/raw",
		"GET /files/readme/meta",
		"GET /café/[ß]",
		"GET /sp%20ace",
		"PUT /only-put",
	)
	cases := []struct {
		method, path string
		want         string // route line, or "" for no match
		params       []string
		allow        string // for a 405: the Allow value
	}{
		{"GET", "/", "GET /", nil, ""},
		{"GET", "/cities/paris", "GET /cities/[city]", []string{"paris"}, ""},
		{"GET", "/cities/london", "GET /cities/london", nil, ""},                                     // static beats param
		{"GET", "/cities/london/days/3", "GET /cities/[city]/days/[n]", []string{"london", "3"}, ""}, // backtrack from static
		{"GET", "/cities/london/days/today", "GET /cities/london/days/today", nil, ""},
		{"GET", "/cities/paris/days/today", "GET /cities/[city]/days/[n]", []string{"paris", "today"}, ""},
		{"GET", "/files/readme/raw", "GET /files/[name]/raw", []string{"readme"}, ""},
		{"GET", "/cities/", "", nil, ""},                                       // an empty segment is no parameter value
		{"GET", "/cities/paris/", "GET /cities/[city]", []string{"paris"}, ""}, // trailing slash ignored
		{"GET", "/a", "GET /a/", nil, ""},                                      // pattern's trailing slash ignored
		{"GET", "/a/", "GET /a/", nil, ""},
		{"DELETE", "/any/1", "ANY /any/[x]", []string{"1"}, ""},
		{"PROPFIND", "/any/1", "ANY /any/[x]", []string{"1"}, ""}, // ANY takes unknown methods
		{"POST", "/any/1", "POST /any/[x]", []string{"1"}, ""},    // exact beats ANY
		{"POST", "/only-put", "", nil, "PUT"},
		{"POST", "/cities/paris", "", nil, "GET"},
		{"GET", "/café/straße", "GET /café/[ß]", []string{"straße"}, ""},
		{"GET", "/sp ace", "GET /sp%20ace", nil, ""}, // patterns are decoded too
		{"GET", "/nothing", "", nil, ""},
		{"GET", "/cities/paris/days", "", nil, ""},
	}
	for _, c := range cases {
		var ps params
		rt, near := r.lookup(methodIndex([]byte(c.method)), []byte(c.path), &ps)
		got := ""
		if rt != nil {
			got = rt.API
		}
		if got != c.want {
			t.Errorf("%s %s: matched %q, want %q", c.method, c.path, got, c.want)
			continue
		}
		if rt != nil {
			var vals []string
			for i := 0; i < ps.n; i++ {
				vals = append(vals, string(ps.v[i]))
			}
			if strings.Join(vals, "|") != strings.Join(c.params, "|") {
				t.Errorf("%s %s: params %q, want %q", c.method, c.path, vals, c.params)
			}
			if len(vals) != len(rt.paramNames) {
				t.Errorf("%s %s: %d values for names %q", c.method, c.path, len(vals), rt.paramNames)
			}
		}
		gotAllow := ""
		if rt == nil && near != nil {
			gotAllow = near.allow
		}
		if gotAllow != c.allow {
			t.Errorf("%s %s: allow %q, want %q", c.method, c.path, gotAllow, c.allow)
		}
	}
}

func TestRouterConflicts(t *testing.T) {
	r := testRouter(t, "GET /a/[x]", "ANY /a/[x]")
	segs, _ := parsePattern("/a/[y]/") // same shape, other name, trailing slash
	if err := r.add("GET", segs, &Route{}); err == nil {
		t.Fatal("GET /a/[y] should conflict with GET /a/[x]")
	}
	if err := r.add("ANY", segs, &Route{}); err == nil {
		t.Fatal("ANY /a/[y] should conflict with ANY /a/[x]")
	}
	if err := r.add("BREW", segs, &Route{}); err == nil {
		t.Fatal("an unknown method should be refused")
	}
}

func TestParsePattern(t *testing.T) {
	good := map[string]string{
		"/":                  "/",
		"/a/b/":              "/a/b",
		"/cities/[city]":     "/cities/[city]",
		"/caf%C3%A9":         "/café",
		"/x/[a]/y/[b]":       "/x/[a]/y/[b]",
		"/%5Bnot-a-param%5D": "/[not-a-param]",
	}
	for in, want := range good {
		segs, err := parsePattern(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := patternString(segs); got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"", "a/b", "/a//b", "/a[b]", "/[a]/[a]", "/%zz", "/[a]]"} {
		if _, err := parsePattern(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	var many strings.Builder
	for i := 0; i <= maxParams; i++ {
		many.WriteString("/[p" + strings.Repeat("x", i) + "]")
	}
	if _, err := parsePattern(many.String()); err == nil {
		t.Errorf("more than %d params: want an error", maxParams)
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"Weather.LocalHost:8080": "weather.localhost",
		"weather.localhost.":     "weather.localhost",
		"[::1]:8080":             "[::1]",
		"API.Example.com":        "api.example.com",
		"":                       "",
	} {
		if got := string(normalizeHost(nil, []byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestAppendEscapedSegment(t *testing.T) {
	for in, want := range map[string]string{
		"plain":      "plain",
		"são paulo":  "s%C3%A3o%20paulo",
		"a/b?c#d%e+": "a%2Fb%3Fc%23d%25e%2B",
		"a:b@c~d.e":  "a:b@c~d.e",
	} {
		if got := string(appendEscapedSegment(nil, []byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
