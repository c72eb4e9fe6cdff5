package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const alibabaFile = `groups:
  - name: weather
    apis:
      - name: city
        method: GET
        path: /cities/[city]
        auth: app
        backend: {type: http, url: "http://%[1]s", path: "/v2/weather/[city]", timeout: 3s}
        deploy: [RELEASE]
      - name: order
        method: POST
        path: /orders
        auth: app
        backend: {type: http, url: "http://%[1]s", path: /orders, timeout: 3s}
        deploy: [RELEASE]
      - name: login
        method: POST
        path: /login
        auth: app
        backend: {type: http, url: "http://%[1]s", path: /login, timeout: 3s}
        deploy: [RELEASE]
apps:
  - {name: mobile, owner: alice, key: "203752345", secret: vA3dXFi3Gx5hZK7bW1sGmkKp4oQ2rT8u}
grants:
  - {app: mobile, api: weather/city, stages: [RELEASE]}
  - {app: mobile, api: weather/order, stages: [RELEASE]}
  - {app: mobile, api: weather/login, stages: [RELEASE]}
`

// TestE2E_AlibabaNodeClient calls signed APIs with the npm package aliyun-api-gateway,
// Alibaba's own client, unchanged: GET with a query, POST JSON, POST form, an extra
// signed header, and a forged signature refused.
func TestE2E_AlibabaNodeClient(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI needs Node.js for the Alibaba client test (.ci/run installs it)")
		}
		t.Skip("Node.js is not installed; apt-get install nodejs npm")
	}
	dir, _ := filepath.Abs("testdata/alibaba")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "aliyun-api-gateway")); err != nil {
		npm := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		npm.Dir = dir
		if out, err := npm.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}

	backend := echoBackend(t)
	p := newNodeProc(t)
	p.start()
	file := writeFile(t, t.TempDir(), "alibaba.yaml", fmt.Sprintf(alibabaFile, backend))
	p.mustCLI("apply", "-f", file)

	cmd := exec.Command(nodeBin, "call.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEWAY=http://"+p.listen, "GROUP_HOST=weather.localhost",
		"APP_KEY=203752345", "APP_SECRET=vA3dXFi3Gx5hZK7bW1sGmkKp4oQ2rT8u")
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the Node.js client did not finish in 60s:\n%s", out)
	}
	if err != nil {
		t.Fatalf("Alibaba's Node.js client: %v\n%s\nnode log:\n%s", err, out, p.log)
	}
	for _, want := range []string{"ok get with query", "ok post json", "ok post form", "ok extra signed header", "ok forged refused"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("missing %q in:\n%s", want, out)
		}
	}
}
