package node

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// TestParametersEndToEnd sends calls through a real node to a real echo backend and
// checks what the backend receives: mapped parameters in their new place and name,
// constants, system parameters, defaults, undeclared parameters dropped, and a backend
// signature that verifies.
func TestParametersEndToEnd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		Path   string              `json:"path"`
		Query  map[string][]string `json:"query"`
		Header http.Header         `json:"header"`
		SigErr string              `json:"sigErr"`
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := seen{Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header}
		if err := signature.VerifyBackendRequest(r, func(key string) (string, bool) {
			return "BackendSecret-0123", key == "BackendKey1"
		}); err != nil {
			s.SigErr = err.Error()
		}
		json.NewEncoder(w).Encode(s)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	n := startNode(t, "params-e2e", nil)
	three, one, max14 := "3", 1.0, 14.0
	b := &fsm.Bundle{
		Groups: []fsm.GroupSpec{{Name: "weather", APIs: []fsm.APISpec{{
			Name: "city",
			APIDef: fsm.APIDef{Method: "GET", Path: "/cities/[city]", Auth: fsm.AuthAnonymous,
				Params: []fsm.Param{
					{Name: "city", In: fsm.InPath, Type: "string", Required: true, Regex: "^[a-z]+$"},
					{Name: "days", In: fsm.InQuery, Type: "int", Min: &one, Max: &max14, Default: &three},
					{Name: "unit", In: fsm.InQuery, Type: "string", Enum: []string{"c", "f"}},
					{Name: "X-Trace", In: fsm.InHeader, Type: "string"},
				},
				Backend: fsm.Backend{Type: fsm.BackendHTTP, URL: "http://" + ln.Addr().String(), Path: "/v2/weather/[city]",
					Timeout:   fsm.Duration(3 * time.Second),
					Map:       []fsm.ParamMapping{{Param: "days", In: fsm.InHeader, Name: "X-Days"}, {Param: "unit", In: fsm.InQuery, Name: "u"}},
					Constants: []fsm.ConstantParam{{Name: "X-Source", In: fsm.InHeader, Value: "tollgate"}},
					System: []fsm.SystemParam{{Param: "CaClientIp", In: fsm.InHeader, Name: "X-Client-Ip"},
						{Param: "CaStage", In: fsm.InQuery, Name: "stage"}, {Param: "CaApiName", In: fsm.InHeader, Name: "X-Api"}},
					Signature: "bk1",
				}},
			Deploy: []fsm.Stage{fsm.StageRelease},
		}}}},
		BackendKeys: []fsm.BackendKey{{Name: "bk1", Key: "BackendKey1", Secret: "BackendSecret-0123"}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := NewClient(n.AdminAddr(), n.Token()).Apply(ctx, b, false); err != nil {
		t.Fatal(err)
	}

	call := func(uri string) seen {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+n.DataAddr()+uri, nil)
		req.Host = "weather.localhost"
		req.Header.Set("X-Trace", "t-1")
		req.Header.Set("X-Undeclared", "drop me")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s %s", uri, resp.StatusCode, resp.Header.Get("X-Ca-Error-Code"), body)
		}
		var s seen
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("%s: %v %s", uri, err, body)
		}
		return s
	}

	s := call("/cities/paris?days=5&unit=c&junk=1")
	checks := []struct {
		what, got, want string
	}{
		{"backend path", s.Path, "/v2/weather/paris"},
		{"days mapped to a header", s.Header.Get("X-Days"), "5"},
		{"unit renamed in the query", first(s.Query["u"]), "c"},
		{"declared header passed", s.Header.Get("X-Trace"), "t-1"},
		{"constant", s.Header.Get("X-Source"), "tollgate"},
		{"CaClientIp", s.Header.Get("X-Client-Ip"), "127.0.0.1"},
		{"CaStage", first(s.Query["stage"]), "RELEASE"},
		{"CaApiName", s.Header.Get("X-Api"), "city"},
		{"undeclared query dropped", first(s.Query["junk"]), ""},
		{"mapped-away name not sent too", first(s.Query["days"]) + first(s.Query["unit"]), ""},
		{"undeclared header dropped", s.Header.Get("X-Undeclared"), ""},
		{"backend signature verifies", s.SigErr, ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	if d := call("/cities/rome").Header.Get("X-Days"); d != "3" {
		t.Errorf("default days: got %q, want 3", d)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
