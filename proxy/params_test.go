package proxy

import (
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// TestParametersEndToEnd sends calls through a served gateway to a real echo backend
// and checks what the backend received: the mapped, constant and system parameters,
// defaults, undeclared parameters dropped, standard headers passed, the backend path.
func TestParametersEndToEnd(t *testing.T) {
	url := "http://" + echoBackend(t)
	def := fiveParamsDef(url+"/base", "")
	three := "3"
	def.Params = append(def.Params, fsm.Param{Name: "days", In: fsm.InQuery, Type: "int", Default: &three})
	def.Backend.System = append(def.Backend.System,
		fsm.SystemParam{Param: "CaAppKey", In: fsm.InHeader, Name: "X-App-Key"},
		fsm.SystemParam{Param: "CaApiName", In: fsm.InHeader, Name: "X-Api"},
		fsm.SystemParam{Param: "CaStage", In: fsm.InHeader, Name: "X-Stage"},
		fsm.SystemParam{Param: "CaDomain", In: fsm.InHeader, Name: "X-Domain"},
		fsm.SystemParam{Param: "CaHttpSchema", In: fsm.InHeader, Name: "X-Schema"},
		fsm.SystemParam{Param: "CaRequestHandleTime", In: fsm.InHeader, Name: "X-Time"},
		fsm.SystemParam{Param: "CaProxy", In: fsm.InHeader, Name: "X-Proxy"})
	body := fsm.APIDef{Method: "POST", Path: "/orders", Auth: fsm.AuthAnonymous,
		Body:    &fsm.BodySpec{Schema: `{"type":"object","required":["qty"],"properties":{"qty":{"type":"integer","minimum":1}}}`},
		Backend: fsm.Backend{Type: fsm.BackendHTTP, URL: url, Path: "/orders"}}
	guarded := httpDef("GET", "/search", url, "")
	guarded.Guard = []string{"injection"}
	guarded.Params = []fsm.Param{{Name: "q", In: fsm.InQuery, Type: "string"}}
	st := newStateOf().
		api("g", "five", def, fsm.StageRelease).
		api("g", "orders", body, fsm.StageRelease).
		api("g", "search", guarded, fsm.StageRelease).
		app("mobile", "AK1", "CODE1", "s1").
		grant("mobile", "g/five", nil, fsm.StageRelease)
	g := startProxy(t, Config{}, st.s)
	sg := signature.NewSigner("AK1", "s1")

	r := g.signedCall(t, sg, "GET", "G.localhost:8080", "/five/abc?b=7&c=up&junk=1", nil, nil,
		"X-D", "hello", "X-E", "true", "X-Junk", "1", "User-Agent", "test-agent", "Accept", "application/json")
	e := decodeEcho(t, r)
	if e.Path != "/base/v1/abc" {
		t.Errorf("backend path %q", e.Path)
	}
	wantQ := map[string]string{"cc": "up", "e": "true", "days": "3", "rid": r.hdr["X-Ca-Request-Id"]}
	for k, v := range wantQ {
		if e.Query[k] != v {
			t.Errorf("query %s = %q, want %q (query %v)", k, e.Query[k], v, e.Query)
		}
	}
	for _, gone := range []string{"junk", "b", "c"} {
		if _, ok := e.Query[gone]; ok {
			t.Errorf("query %s reached the backend: %v", gone, e.Query)
		}
	}
	wantH := map[string]string{"X-B": "7", "X-D": "hello", "X-Source": "tollgate", "X-Client-Ip": "127.0.0.1",
		"X-App": "mobile", "X-App-Key": "AK1", "X-Api": "five", "X-Stage": "RELEASE", "X-Domain": "g.localhost",
		"X-Schema": "http", "X-Proxy": "Tollgate", "User-Agent": "test-agent", "Accept": "application/json"}
	for k, v := range wantH {
		if e.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, e.Headers[k], v)
		}
	}
	if !strings.HasSuffix(e.Headers["X-Time"], " GMT") {
		t.Errorf("CaRequestHandleTime %q", e.Headers["X-Time"])
	}
	for _, gone := range []string{"X-Junk", "X-E"} {
		if _, ok := e.Headers[gone]; ok {
			t.Errorf("header %s reached the backend", gone)
		}
	}

	// A client cannot forge a system or constant parameter.
	e = decodeEcho(t, g.signedCall(t, sg, "GET", "g.localhost", "/five/abc?b=7&rid=forged", nil, nil, "X-Source", "evil", "X-App", "root"))
	if e.Headers["X-Source"] != "tollgate" || e.Headers["X-App"] != "mobile" || e.Query["rid"] == "forged" {
		t.Errorf("forged values reached the backend: %v %v", e.Headers, e.Query)
	}

	// Refusals name the parameter and the rule.
	for _, c := range []struct {
		uri  string
		hdrs []string
		e    *ErrorCode
		msg  string
	}{
		{"/five/abc?b=700", nil, ErrInvalidParam, "Invalid Parameter: b (max 100)"},
		{"/five/abc?b=x", nil, ErrInvalidParam, "Invalid Parameter: b (type int)"},
		{"/five/abc", nil, ErrMissingParam, "Required Parameter Missing: b"},
		{"/five/ABC?b=1", nil, ErrInvalidParam, "Invalid Parameter: a (regex ^[a-z]+$)"},
		{"/five/abc?b=1&c=sideways", nil, ErrInvalidParam, "Invalid Parameter: c (enum up, down)"},
		{"/five/abc?b=1", []string{"X-E", "maybe"}, ErrInvalidParam, "Invalid Parameter: X-E (type boolean)"},
	} {
		r := g.signedCall(t, sg, "GET", "g.localhost", c.uri, nil, nil, c.hdrs...)
		wantError(t, r, c.e)
		if got := r.hdr["X-Ca-Error-Message"]; got != c.msg && !(c.e == ErrInvalidParam && strings.HasPrefix(got, c.msg[:strings.Index(c.msg, "(")])) {
			t.Errorf("%s: message %q, want %q", c.uri, got, c.msg)
		}
	}

	// JSON Schema body.
	if r := g.call(t, "POST", "g.localhost", "/orders", []byte(`{"qty":2}`), "Content-Type", "application/json"); r.status != 200 {
		t.Errorf("valid body: %d %s %s", r.status, r.code(), r.hdr["X-Ca-Error-Message"])
	}
	r = g.call(t, "POST", "g.localhost", "/orders", []byte(`{"qty":0}`), "Content-Type", "application/json")
	wantError(t, r, ErrInvalidBody)
	if !strings.HasPrefix(r.hdr["X-Ca-Error-Message"], "Invalid Request Body (") {
		t.Errorf("body message %q", r.hdr["X-Ca-Error-Message"])
	}

	// Injection guard.
	if r := g.call(t, "GET", "g.localhost", "/search?q=weather+in+paris", nil); r.status != 200 {
		t.Errorf("harmless query refused: %d %s", r.status, r.hdr["X-Ca-Error-Message"])
	}
	r = g.call(t, "GET", "g.localhost", "/search?q=1%27%20OR%20%271%27%3D%271", nil)
	wantErrorMessage(t, r, ErrInjection, "Invalid Parameter: q (sql injection)")
	r = g.call(t, "GET", "g.localhost", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E", nil)
	wantErrorMessage(t, r, ErrInjection, "Invalid Parameter: q (xss)")
}
