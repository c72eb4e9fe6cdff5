package param

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

func header(req *fasthttp.Request, k string) string { return string(req.Header.Peek(k)) }

func TestDropUndeclared(t *testing.T) {
	def := &fsm.APIDef{Path: "/x", Params: []fsm.Param{
		{Name: "a", In: fsm.InQuery},
		{Name: "X-A", In: fsm.InHeader},
		{Name: "f", In: fsm.InForm},
	}}
	hdrs := [][2]string{
		{"X-A", "1"}, {"X-B", "2"}, {"Accept", "text/plain"}, {"Accept-Language", "fr"},
		{"User-Agent", "ua"}, {"Authorization", "APPCODE x"}, {"X-Ca-Key", "k"},
		{"X-Forwarded-For", "10.0.0.1"}, {"Proxy-Authorization", "Basic eA=="}, {"X-Secret", "s"},
	}
	for _, passthrough := range []bool{false, true} {
		def.Passthrough = passthrough
		p := mustCompile(t, def)
		req := request(t, "POST", "/x?a=1&b=2&a=3", hdrs, "application/x-www-form-urlencoded", "f=4&g=5")
		var s Scratch
		if err := p.Apply(req, nil, nil, &s); err != nil {
			t.Fatal(err)
		}
		wantQ := map[string][]string{"a": {"1", "3"}}
		wantF := map[string][]string{"f": {"4"}}
		if passthrough {
			wantQ["b"] = []string{"2"}
			wantF["g"] = []string{"5"}
		}
		if got := query(req); !reflect.DeepEqual(map[string][]string(got), wantQ) {
			t.Errorf("passthrough=%v query = %v, want %v", passthrough, got, wantQ)
		}
		if got := form(req); !reflect.DeepEqual(map[string][]string(got), wantF) {
			t.Errorf("passthrough=%v form = %v, want %v", passthrough, got, wantF)
		}
		for _, h := range hdrs {
			dropped := !passthrough && (h[0] == "X-B" || h[0] == "X-Secret" || h[0] == "Proxy-Authorization")
			if got := header(req, h[0]); (got == "") != dropped || (!dropped && got != h[1]) {
				t.Errorf("passthrough=%v header %s = %q (dropped: %v)", passthrough, h[0], got, dropped)
			}
		}
		if header(req, "Content-Type") != "application/x-www-form-urlencoded" || string(req.Header.Host()) != "api.example.com" {
			t.Errorf("standard headers must pass: %s", req.Header.String())
		}
	}
}

func TestNoParamsPassesAll(t *testing.T) {
	def := &fsm.APIDef{Path: "/x", Backend: fsm.Backend{
		Constants: []fsm.ConstantParam{{Name: "source", In: "query", Value: "tollgate"}, {Name: "X-Source", In: "header", Value: "tg"}},
	}}
	p := mustCompile(t, def)
	req := request(t, "POST", "/x?b=2&source=forged", [][2]string{{"X-Custom", "c"}, {"X-Source", "forged"}}, "application/x-www-form-urlencoded", "g=5")
	var s Scratch
	if err := p.Apply(req, nil, nil, &s); err != nil {
		t.Fatal(err)
	}
	if got := query(req); !reflect.DeepEqual(map[string][]string(got), map[string][]string{"b": {"2"}, "source": {"tollgate"}}) {
		t.Errorf("query = %v: undeclared pass, constants replace forged values", got)
	}
	if string(req.Body()) != "g=5" || header(req, "X-Custom") != "c" || header(req, "X-Source") != "tg" {
		t.Errorf("body %q, headers %s", req.Body(), req.Header.String())
	}
}

func TestMappingAcrossLocations(t *testing.T) {
	def := &fsm.APIDef{
		Path: "/cities/[city]",
		Params: []fsm.Param{
			{Name: "city", In: fsm.InPath, Regex: "^[a-z]+$"},
			{Name: "days", In: fsm.InQuery, Type: "int"},
			{Name: "X-Token", In: fsm.InHeader},
			{Name: "f", In: fsm.InForm},
			{Name: "q", In: fsm.InQuery},
			{Name: "id", In: fsm.InQuery},
			{Name: "X-Old", In: fsm.InHeader},
			{Name: "ids", In: fsm.InHeader, Type: "array", Items: "int"},
			{Name: "keep", In: fsm.InQuery},
		},
		Backend: fsm.Backend{
			Path: "/v2/[city]/items/[item]",
			Map: []fsm.ParamMapping{
				{Param: "days", In: "header", Name: "X-Days"},
				{Param: "X-Token", In: "query", Name: "token"},
				{Param: "f", In: "query", Name: "ff"},
				{Param: "q", In: "form", Name: "qq"},
				{Param: "id", In: "path", Name: "item"},
				{Param: "X-Old", Name: "X-New"},
				{Param: "ids", In: "query"},
			},
		},
	}
	p := mustCompile(t, def, "city")
	req := request(t, "POST", "/cities/paris?days=3&q=hello&id=a%2Fb%20c&keep=1&drop=1",
		[][2]string{{"X-Token", "tok"}, {"X-Old", "old"}, {"Ids", "1,2"}, {"Ids", "3"}},
		"application/x-www-form-urlencoded", "f=form")
	var s Scratch
	pv := [][]byte{[]byte("paris")}
	if err := p.Apply(req, pv, nil, &s); err != nil {
		t.Fatal(err)
	}
	wantQ := map[string][]string{"keep": {"1"}, "token": {"tok"}, "ff": {"form"}, "ids": {"1", "2", "3"}}
	if got := query(req); !reflect.DeepEqual(map[string][]string(got), wantQ) {
		t.Errorf("query = %v, want %v", got, wantQ)
	}
	if got := form(req); !reflect.DeepEqual(map[string][]string(got), map[string][]string{"qq": {"hello"}}) {
		t.Errorf("form = %v", got)
	}
	for k, want := range map[string]string{"X-Days": "3", "X-Token": "", "X-Old": "", "X-New": "old", "Ids": ""} {
		if got := header(req, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if got := string(p.BackendPath(nil, pv, nil, &s)); got != "/v2/paris/items/a%2Fb%20c" {
		t.Errorf("backend path = %q", got)
	}
}

func TestDefaultsForwarded(t *testing.T) {
	def := &fsm.APIDef{Path: "/x", Params: []fsm.Param{
		{Name: "days", In: fsm.InQuery, Type: "int", Default: ptr("3")},
		{Name: "unit", In: fsm.InQuery, Default: ptr("c")},
		{Name: "X-Lang", In: fsm.InHeader, Default: ptr("en")},
		{Name: "tags", In: fsm.InQuery, Type: "array", Default: ptr("a,b")},
	}, Backend: fsm.Backend{Map: []fsm.ParamMapping{{Param: "unit", In: "header", Name: "X-Unit"}, {Param: "tags", In: "form"}}}}
	p := mustCompile(t, def)
	req := request(t, "GET", "/x", nil, "", "")
	var s Scratch
	if err := p.Apply(req, nil, nil, &s); err != nil {
		t.Fatal(err)
	}
	if got := query(req); !reflect.DeepEqual(map[string][]string(got), map[string][]string{"days": {"3"}}) {
		t.Errorf("query = %v", got)
	}
	if header(req, "X-Unit") != "c" || header(req, "X-Lang") != "en" {
		t.Errorf("headers: %s", req.Header.String())
	}
	if got := form(req); !reflect.DeepEqual(map[string][]string(got), map[string][]string{"tags": {"a", "b"}}) || header(req, "Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("form = %v, content type %q", got, header(req, "Content-Type"))
	}
	// A value the client sends wins over the default and is left as sent.
	req = request(t, "GET", "/x?days=5", [][2]string{{"X-Lang", "fr"}}, "", "")
	if err := p.Apply(req, nil, nil, &s); err != nil {
		t.Fatal(err)
	}
	if got := query(req).Get("days"); got != "5" || header(req, "X-Lang") != "fr" {
		t.Errorf("days = %q, X-Lang = %q", got, header(req, "X-Lang"))
	}
}

func TestFormTargetNeedsFormBody(t *testing.T) {
	def := &fsm.APIDef{Path: "/x", Backend: fsm.Backend{Constants: []fsm.ConstantParam{{Name: "c", In: "form", Value: "1"}}}}
	p := mustCompile(t, def)
	var s Scratch
	req := request(t, "POST", "/x", nil, "application/json", `{"a":1}`)
	if got := msg(p.Apply(req, nil, nil, &s)); got != "Invalid Request Body (form parameters need an application/x-www-form-urlencoded body)" {
		t.Fatalf("got %q", got)
	}
}

func TestConstantsAndSystem(t *testing.T) {
	def := &fsm.APIDef{Path: "/x", Params: []fsm.Param{{Name: "a", In: fsm.InQuery}}, Backend: fsm.Backend{
		Path: "/b/[tenant]/[stage]",
		Constants: []fsm.ConstantParam{
			{Name: "X-Source", In: "header", Value: "tollgate"},
			{Name: "src", In: "query", Value: "tg"},
			{Name: "cf", In: "form", Value: "v"},
			{Name: "tenant", In: "path", Value: "acme corp"},
		},
		System: []fsm.SystemParam{
			{Param: "CaClientIp", In: "header", Name: "X-Client-Ip"},
			{Param: "CaRequestId", In: "header", Name: "X-Rid"},
			{Param: "CaAppId", In: "header", Name: "X-App"},
			{Param: "CaAppKey", In: "header", Name: "X-App-Key"},
			{Param: "CaApiName", In: "query", Name: "api"},
			{Param: "CaStage", In: "path", Name: "stage"},
			{Param: "CaDomain", In: "header", Name: "X-Domain"},
			{Param: "CaHttpSchema", In: "header", Name: "X-Scheme"},
			{Param: "CaRequestHandleTime", In: "header", Name: "X-Time"},
			{Param: "CaProxy", In: "form"},
		},
	}}
	p := mustCompile(t, def)
	sys := &System{
		ClientIP: []byte("203.0.113.9"), RequestID: []byte("rid-1"), AppID: []byte("mobile"),
		AppKey: []byte("key1"), APIName: []byte("city"), Stage: []byte("RELEASE"),
		Domain: []byte("weather.localhost"), HTTPSchema: []byte("https"),
		RequestHandleTime: []byte("Mon, 02 Jan 2006 15:04:05 GMT"),
	}
	req := request(t, "GET", "/x?a=1", [][2]string{{"X-Client-Ip", "6.6.6.6"}}, "", "")
	var s Scratch
	if err := p.Apply(req, nil, sys, &s); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"X-Source": "tollgate", "X-Client-Ip": "203.0.113.9", "X-Rid": "rid-1", "X-App": "mobile",
		"X-App-Key": "key1", "X-Domain": "weather.localhost", "X-Scheme": "https",
		"X-Time": "Mon, 02 Jan 2006 15:04:05 GMT",
	} {
		if got := header(req, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if got := query(req); !reflect.DeepEqual(map[string][]string(got), map[string][]string{"a": {"1"}, "src": {"tg"}, "api": {"city"}}) {
		t.Errorf("query = %v", got)
	}
	if got := form(req); !reflect.DeepEqual(map[string][]string(got), map[string][]string{"cf": {"v"}, "CaProxy": {"Tollgate"}}) {
		t.Errorf("form = %v", got)
	}
	if got := string(p.BackendPath(nil, nil, sys, &s)); got != "/b/acme%20corp/RELEASE" {
		t.Errorf("backend path = %q", got)
	}
}

func TestBackendPath(t *testing.T) {
	def := &fsm.APIDef{Path: "/a/[x]/[y]", Params: []fsm.Param{
		{Name: "x", In: fsm.InPath},
		{Name: "n", In: fsm.InQuery, Type: "array"},
		{Name: "opt", In: fsm.InQuery},
	}, Backend: fsm.Backend{
		Path: "/b/[y]/[x]/[n]/[o]",
		Map:  []fsm.ParamMapping{{Param: "n", In: "path"}, {Param: "opt", In: "path", Name: "o"}},
	}}
	p := mustCompile(t, def, "x", "y")
	var s Scratch
	pv := [][]byte{[]byte("a b/c?d#e%f+g&h"), []byte("ü~._-")}
	req := request(t, "GET", "/?n=1,2&n=3", nil, "", "")
	if err := p.Apply(req, pv, nil, &s); err != nil {
		t.Fatal(err)
	}
	want := "/b/%C3%BC~._-/a%20b%2Fc%3Fd%23e%25f%2Bg%26h/1,2,3/"
	if got := string(p.BackendPath(nil, pv, nil, &s)); got != want {
		t.Errorf("backend path = %q, want %q", got, want)
	}
	// A value mapped into the path must not climb out of it.
	req = request(t, "GET", "/?n=..", nil, "", "")
	if got := msg(p.Apply(req, pv, nil, &s)); got != "Invalid Parameter: n (path segment)" {
		t.Errorf("dot segment: %q", got)
	}
	// No backend path: the frontend path, its segments re-encoded.
	p = mustCompile(t, &fsm.APIDef{Path: "/a/[x]"}, "x")
	if err := p.Apply(request(t, "GET", "/", nil, "", ""), pv[:1], nil, &s); err != nil {
		t.Fatal(err)
	}
	if got := string(p.BackendPath(nil, pv, nil, &s)); got != "/a/a%20b%2Fc%3Fd%23e%25f%2Bg%26h" {
		t.Errorf("default backend path = %q", got)
	}
}

func TestJSONSchemaBody(t *testing.T) {
	def := &fsm.APIDef{Path: "/orders", Body: &fsm.BodySpec{
		Schema: `{"type":"object","required":["qty"],"properties":{"qty":{"type":"integer","minimum":1}}}`,
	}}
	p := mustCompile(t, def)
	cases := []struct{ ct, body, want string }{
		{"application/json", `{"qty":2}`, ""},
		{"application/json; charset=utf-8", `{"qty":2,"note":"x"}`, ""},
		{"application/vnd.api+json", `{"qty":2}`, ""},
		{"application/json", `{"qty":0}`, "Invalid Request Body (at '/qty': minimum: got 0, want 1)"},
		{"application/json", `{}`, "Invalid Request Body (at '': missing property 'qty')"},
		{"application/json", `{"qty":"2"}`, "Invalid Request Body (at '/qty': got string, want integer)"},
		{"application/json", `{"qty":`, "Invalid Request Body (not JSON)"},
		{"application/json", ``, "Invalid Request Body (empty)"},
		{"text/plain", `{"qty":2}`, "Invalid Request Body (content type must be application/json)"},
	}
	for _, tc := range cases {
		req := request(t, "POST", "/orders", nil, tc.ct, tc.body)
		var s Scratch
		if got := msg(p.Apply(req, nil, nil, &s)); got != tc.want {
			t.Errorf("%s %s: got %q, want %q", tc.ct, tc.body, got, tc.want)
		}
		if tc.want == "" && string(req.Body()) != tc.body {
			t.Errorf("a JSON body passes untouched, got %q", req.Body())
		}
	}
}

func TestInjectionGuard(t *testing.T) {
	def := &fsm.APIDef{Path: "/s/[p]", Guard: []string{"injection"}, Params: []fsm.Param{
		{Name: "q", In: fsm.InQuery},
		{Name: "X-Q", In: fsm.InHeader},
	}, Passthrough: true}
	p := mustCompile(t, def, "p")
	attacks := []struct{ where, v, want string }{
		{"query", "1' OR '1'='1", "Invalid Parameter: q (sql injection)"},
		{"query", "1 UNION SELECT password FROM users--", "Invalid Parameter: q (sql injection)"},
		{"query", "<script>alert(1)</script>", "Invalid Parameter: q (xss)"},
		{"query", `<img src=x onerror=alert(1)>`, "Invalid Parameter: q (xss)"},
		{"header", "1; DROP TABLE users--", "Invalid Parameter: X-Q (sql injection)"},
		{"undeclared", "' or 1=1 --", "Invalid Parameter: other (sql injection)"},
		{"path", "<svg onload=alert(1)>", "Invalid Parameter: p (xss)"},
	}
	benign := []string{"hello world", "john.doe@example.com", "O'Reilly", "1,2,3", "paris", "price < 100", "select a phone", "-42", "2024-01-01T10:00:00Z", "a+b=c"}
	run := func(where, v string) string {
		var req *fasthttp.Request
		pv := [][]byte{[]byte("ok")}
		switch where {
		case "query":
			req = request(t, "GET", "/s/ok?q="+escape(v), nil, "", "")
		case "header":
			req = request(t, "GET", "/s/ok", [][2]string{{"X-Q", v}}, "", "")
		case "undeclared":
			req = request(t, "POST", "/s/ok", nil, "application/x-www-form-urlencoded", "other="+escape(v))
		case "path":
			req = request(t, "GET", "/s/x", nil, "", "")
			pv = [][]byte{[]byte(v)}
		}
		var s Scratch
		return msg(p.Apply(req, pv, nil, &s))
	}
	for _, a := range attacks {
		if got := run(a.where, a.v); got != a.want {
			t.Errorf("%s %q: got %q, want %q", a.where, a.v, got, a.want)
		}
	}
	for _, v := range benign {
		for _, where := range []string{"query", "header", "undeclared", "path"} {
			if where == "path" && strings.ContainsAny(v, "/") {
				continue
			}
			if got := run(where, v); got != "" {
				t.Errorf("benign %s %q flagged: %q", where, v, got)
			}
		}
	}
	// Without the guard the same values pass.
	def.Guard = nil
	p = mustCompile(t, def, "p")
	req := request(t, "GET", "/s/ok?q="+escape("1' OR '1'='1"), nil, "", "")
	var s Scratch
	if err := p.Apply(req, [][]byte{[]byte("ok")}, nil, &s); err != nil {
		t.Fatalf("unguarded API refused: %v", err)
	}
}

func escape(v string) string { return string(fasthttp.AppendQuotedArg(nil, []byte(v))) }

func TestStandardHeader(t *testing.T) {
	for _, h := range []string{"Accept", "accept-encoding", "CONTENT-MD5", "If-None-Match", "X-Forwarded-Proto", "x-ca-signature", "Traceparent", "Sec-Fetch-Mode", "Cookie", "Host"} {
		if !StandardHeader([]byte(h)) {
			t.Errorf("%s should pass", h)
		}
	}
	for _, h := range []string{"X-Custom", "Proxy-Authorization", "X-Ca", "Content-", "X-Api-Key", strings.Repeat("a", 40)} {
		if StandardHeader([]byte(h)) {
			t.Errorf("%s should be dropped", h)
		}
	}
	// Every listed name and prefix, in any case, and its near misses.
	for name := range standardHeaders {
		for _, h := range []string{name, strings.ToUpper(name), http.CanonicalHeaderKey(name)} {
			if !StandardHeader([]byte(h)) {
				t.Errorf("%s should pass", h)
			}
			if StandardHeader([]byte(h[:len(h)-1])) && !isStandardSpelled(h[:len(h)-1]) {
				t.Errorf("%s (a prefix of %s) should be dropped", h[:len(h)-1], name)
			}
			if StandardHeader([]byte(h+"x")) && !isStandardSpelled(h+"x") {
				t.Errorf("%sx should be dropped", h)
			}
		}
	}
	for _, p := range standardPrefixes {
		if StandardHeader([]byte(p)) {
			t.Errorf("%s alone should be dropped", p)
		}
		if !StandardHeader([]byte(strings.ToUpper(p) + "X")) {
			t.Errorf("%sX should pass", strings.ToUpper(p))
		}
	}
}

// isStandardSpelled is StandardHeader's definition, spelled out: a listed name or a
// longer name in a listed family, in any case.
func isStandardSpelled(h string) bool {
	low := strings.ToLower(h)
	if _, ok := standardHeaders[low]; ok {
		return true
	}
	for _, p := range standardPrefixes {
		if len(low) > len(p) && strings.HasPrefix(low, p) {
			return true
		}
	}
	return false
}

func BenchmarkStandardHeader(b *testing.B) {
	names := [][]byte{[]byte("Host"), []byte("User-Agent"), []byte("Accept"), []byte("X-Ca-Key"), []byte("X-Ca-Signature"),
		[]byte("X-Ca-Timestamp"), []byte("X-Ca-Nonce"), []byte("Content-Type"), []byte("X-Token"), []byte("X-Custom-Thing")}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for _, h := range names {
			if StandardHeader(h) {
				n++
			}
		}
	}
	if n == 0 {
		b.Fatal("no name passed")
	}
}

// TestScratchReuse applies plans of different sizes through one Scratch, as a pool
// would, and checks nothing leaks from one request into the next.
func TestScratchReuse(t *testing.T) {
	big := mustCompile(t, &fsm.APIDef{Path: "/x", Params: []fsm.Param{{Name: "a", In: "query"}, {Name: "b", In: "query", Required: true}, {Name: "c", In: "query"}}})
	small := mustCompile(t, &fsm.APIDef{Path: "/x", Params: []fsm.Param{{Name: "a", In: "query", Required: true}}})
	var s Scratch
	if err := big.Apply(request(t, "GET", "/x?a=1&b=2&c=3", nil, "", ""), nil, nil, &s); err != nil {
		t.Fatal(err)
	}
	if got := msg(small.Apply(request(t, "GET", "/x", nil, "", ""), nil, nil, &s)); got != "Required Parameter Missing: a" {
		t.Fatalf("stale value from the previous request: %q", got)
	}
	if got := msg(big.Apply(request(t, "GET", "/x?a=1", nil, "", ""), nil, nil, &s)); got != "Required Parameter Missing: b" {
		t.Fatalf("stale value from the previous request: %q", got)
	}
}
