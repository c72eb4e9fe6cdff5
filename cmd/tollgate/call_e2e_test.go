package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2E_CallSignsAsTheQuickstartShows: `tollgate call --app` against a real node, with
// the URL the quickstart prints (the group's name under localhost, which Go's
// resolver alone does not find on every machine): the signed call is answered, the
// output shows the string-to-sign, the request and the response, and a parameter out
// of range comes back as I400IP with exit code 1.
func TestE2E_CallSignsAsTheQuickstartShows(t *testing.T) {
	p := newNodeProc(t)
	p.start()
	file := filepath.Join(t.TempDir(), "call.yaml")
	if err := os.WriteFile(file, []byte(`groups:
  - name: demo
    apis:
      - name: weather
        method: GET
        path: /cities/[city]
        auth: app
        params:
          - {name: city, in: path, type: string, required: true, regex: "^[a-z]+$"}
          - {name: days, in: query, type: int, min: 1, max: 14, default: "3"}
        backend: {type: mock, status: 200, body: '{"sunny":true}'}
        deploy: [RELEASE]
apps:
  - {name: mobile, owner: alice}
grants:
  - {app: mobile, api: demo/weather, stages: [RELEASE]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	p.mustCLI("apply", "-f", file)
	_, port, _ := strings.Cut(p.listen, ":")
	base := "http://demo.localhost:" + port

	out := p.mustCLI("call", "--app", "mobile", base+"/cities/paris?days=5")
	for _, want := range []string{"== string to sign (HmacSHA256)\nGET\n", "/cities/paris?days=5", "== request\nGET /cities/paris?days=5 HTTP/1.1\nHost: demo.localhost:" + port, "X-Ca-Signature: ", "== response", "200 OK", `{"sunny":true}`} {
		if !strings.Contains(out, want) {
			t.Fatalf("tollgate call output lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code := p.cli("call", "--app", "mobile", base+"/cities/paris?days=99")
	if code != 1 || !strings.Contains(out, "400 Bad Request") || !strings.Contains(out, "I400IP") {
		t.Fatalf("days=99: exit %d, want 1 with 400 I400IP:\n%s%s", code, out, errOut)
	}
}
