package node

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// TestAppAuthEndToEnd runs one in-process node on real sockets: a bundle with an app, a
// grant and an auth: app API is applied through the admin API; a signed call passes,
// unsigned and forged ones are refused, and after the bundle is applied again without
// the grant the same signed call is refused as Unauthorized.
func TestAppAuthEndToEnd(t *testing.T) {
	n := startNode(t, "auth-e2e", nil)
	client := NewClient("http://"+n.AdminAddr(), n.Token())

	bundle := &fsm.Bundle{
		Groups: []fsm.GroupSpec{{Name: "weather", APIs: []fsm.APISpec{{
			Name: "city",
			APIDef: fsm.APIDef{Method: "GET", Path: "/cities/[city]", Auth: fsm.AuthApp,
				Backend: fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: `{"ok":true}`}},
			Deploy: []fsm.Stage{fsm.StageRelease},
		}}}},
		Apps:   []fsm.AppSpec{{Name: "mobile", Owner: "alice", Key: "AK-e2e-mobile", Secret: "SK-e2e-mobile-secret", Code: "CODE-e2e"}},
		Grants: []fsm.GrantSpec{{App: "mobile", API: "weather/city", Stages: []fsm.Stage{fsm.StageRelease}}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Apply(ctx, bundle, false); err != nil {
		t.Fatalf("apply: %v", err)
	}

	call := func(secret string, tamper func(*http.Request)) (int, string, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+n.DataAddr()+"/cities/paris?days=3", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "weather.localhost"
		if secret != "" {
			if _, err := signature.NewSigner("AK-e2e-mobile", secret).SignHTTP(req); err != nil {
				t.Fatal(err)
			}
		}
		if tamper != nil {
			tamper(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Ca-Error-Code"), resp.Header.Get("X-Ca-Error-Message") + string(body)
	}

	if st, code, msg := call("SK-e2e-mobile-secret", nil); st != 200 {
		t.Fatalf("signed call: %d %s %s", st, code, msg)
	}
	if st, code, _ := call("", nil); st != 400 || code != "A400IK" {
		t.Errorf("unsigned call: %d %s", st, code)
	}
	st, code, msg := call("not-the-secret", nil)
	if st != 403 || code != "A403IS" || !strings.Contains(msg, "Server StringToSign:`GET#") {
		t.Errorf("forged call: %d %s %s", st, code, msg)
	}
	if strings.Contains(msg, "SK-e2e-mobile-secret") {
		t.Errorf("the secret leaked into the answer: %s", msg)
	}
	if st, code, _ := call("SK-e2e-mobile-secret", func(r *http.Request) { r.URL.RawQuery = "days=14" }); st != 403 || code != "A403IS" {
		t.Errorf("tampered call: %d %s", st, code)
	}

	bundle.Grants = nil
	if _, err := client.Apply(ctx, bundle, false); err != nil {
		t.Fatalf("apply without the grant: %v", err)
	}
	if st, code, msg := call("SK-e2e-mobile-secret", nil); st != 403 || code != "A403NG" {
		t.Errorf("after revoke: %d %s %s", st, code, msg)
	}
}
