package main

// End-to-end tests: real `tollgate node` processes on free loopback ports, driven by
// the real CLI binary, calling a real backend through the data plane.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/node"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tollgate")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tollgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// nodeProc is one `tollgate node` process and the addresses it was given.
type nodeProc struct {
	t                         *testing.T
	dir                       string
	listen, admin, raft, goss string
	extra                     []string // more flags for `tollgate node`
	cmd                       *exec.Cmd
	exited                    chan struct{} // closed once cmd has exited
	log                       *syncBuffer
	started, cleanup          bool
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newNodeProc(t *testing.T) *nodeProc {
	return &nodeProc{t: t, dir: t.TempDir(), listen: freeAddr(t), admin: freeAddr(t), raft: freeAddr(t), goss: freeAddr(t)}
}

func (p *nodeProc) start() {
	p.t.Helper()
	for attempt := 1; ; attempt++ {
		p.log = &syncBuffer{}
		args := append([]string{"node", "--data", p.dir, "--listen", p.listen, "--admin", p.admin,
			"--raft", p.raft, "--gossip", p.goss, "--node-id", "n1"}, p.extra...)
		p.cmd = exec.Command(binary, args...)
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			p.t.Fatal(err)
		}
		p.exited = make(chan struct{})
		go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(p.cmd, p.exited)
		if !p.cleanup {
			p.cleanup = true
			p.t.Cleanup(func() { p.kill() })
		}
		if p.waitReady() {
			p.started = true
			return
		}
		// A port found free may be taken by another test process before the node binds
		// it. A node that never started may move; a restarted one keeps its addresses.
		if !p.started && attempt < 5 && strings.Contains(p.log.String(), "address already in use") {
			p.kill()
			p.dir = p.t.TempDir()
			p.listen, p.admin, p.raft, p.goss = freeAddr(p.t), freeAddr(p.t), freeAddr(p.t), freeAddr(p.t)
			continue
		}
		p.t.Fatalf("node not ready within 20s; its log:\n%s", p.log)
	}
}

// waitReady waits up to 20 s for /readyz to answer 200 and reports whether it did; it
// gives up at once when the process exits.
func (p *nodeProc) waitReady() bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return true
			}
		}
		select {
		case <-p.exited:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// kill ends the process with SIGKILL: nothing is flushed or drained.
func (p *nodeProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// cli runs the tollgate binary against this node and returns stdout, stderr and the
// exit code.
func (p *nodeProc) cli(args ...string) (string, string, int) {
	p.t.Helper()
	// The token comes from the node's data dir, as in the quickstart.
	return runCLI(p.t, []string{"TOLLGATE_ADMIN=http://" + p.admin, "TOLLGATE_ADMIN_TOKEN="}, p.dir, append(args, "--data", p.dir)...)
}

// runCLI runs the tollgate binary with extra environment in dir (the test's own when
// empty) and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, env []string, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func (p *nodeProc) mustCLI(args ...string) string {
	p.t.Helper()
	out, errs, code := p.cli(args...)
	if code != 0 {
		p.t.Fatalf("tollgate %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (p *nodeProc) client() *node.Client {
	b, err := os.ReadFile(filepath.Join(p.dir, node.TokenFile))
	if err != nil {
		p.t.Fatal(err)
	}
	return node.NewClient(p.admin, strings.TrimSpace(string(b)))
}

func (p *nodeProc) state() *fsm.State {
	p.t.Helper()
	s, err := p.client().State(context.Background())
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// call sends a request through the data plane with the group's host name.
func (p *nodeProc) call(method, host, path string, hdr map[string]string) (int, http.Header, string) {
	p.t.Helper()
	req, err := http.NewRequest(method, "http://"+p.listen+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// echoBackend answers with everything it received: method, path, query (raw and
// parsed), headers, body, and the X-Forwarded-For and Host the gateway set.
func echoBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(echoed{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Query: r.URL.Query(),
			Headers: r.Header, Body: string(body), XFF: r.Header.Get("X-Forwarded-For"), Host: r.Host,
		})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// echoed is what echoBackend answers.
type echoed struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	RawQuery string              `json:"rawQuery"`
	Query    map[string][]string `json:"query"`
	Headers  map[string][]string `json:"headers"`
	Body     string              `json:"body"`
	XFF      string              `json:"xff"`
	Host     string              `json:"host"`
}

const fileTemplate = `groups:
  - name: shop
    apis:
      - name: item
        method: GET
        path: /items/[id]
        auth: anonymous
        backend:
          type: http
          url: http://%s
          path: %s
          timeout: 2s
        deploy: [TEST, RELEASE]
      - name: ping
        method: GET
        path: /ping
        auth: anonymous
        backend: {type: mock, status: 200, body: pong}
        deploy: [RELEASE]
apps:
  - {name: mobile, owner: alice}
`

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func decodeEcho(t *testing.T, body string) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return e
}

func TestE2E_ApplyDeployRollbackRestart(t *testing.T) {
	backend := echoBackend(t)
	p := newNodeProc(t)
	p.start()
	files := t.TempDir()

	v1 := writeFile(t, files, "v1.yaml", fmt.Sprintf(fileTemplate, backend, "/v1/items/[id]"))
	out := p.mustCLI("apply", "-f", v1)
	for _, want := range []string{"create   group       shop", "deploy   api         shop/item  (RELEASE v1)", "create   app         mobile"} {
		if !strings.Contains(out, want) {
			t.Fatalf("apply output lacks %q:\n%s", want, out)
		}
	}
	status, hdr, body := p.call("GET", "shop.localhost", "/items/42?color=red", nil)
	if status != 200 {
		t.Fatalf("call: %d %s %v", status, body, hdr)
	}
	if hdr.Get("X-Ca-Request-Id") == "" {
		t.Fatal("no X-Ca-Request-Id")
	}
	got := decodeEcho(t, body)
	if got.Path != "/v1/items/42" || got.RawQuery != "color=red" || got.XFF != "127.0.0.1" {
		t.Fatalf("backend saw %v", got)
	}
	if out := p.mustCLI("apply", "-f", v1); !strings.Contains(out, "no changes") {
		t.Fatalf("re-apply of the same file: %s", out)
	}

	// Version 2 changes the backend path: served at once.
	v2 := writeFile(t, files, "v2.yaml", fmt.Sprintf(fileTemplate, backend, "/v2/items/[id]"))
	if out := p.mustCLI("apply", "-f", v2, "--dry-run"); !strings.Contains(out, "RELEASE v2") || !strings.Contains(out, "nothing applied") {
		t.Fatalf("dry run: %s", out)
	}
	if _, _, body := p.call("GET", "shop.localhost", "/items/42", nil); decodeEcho(t, body).Path != "/v1/items/42" {
		t.Fatal("dry run changed what is served")
	}
	p.mustCLI("apply", "-f", v2)
	if _, _, body := p.call("GET", "shop.localhost", "/items/42", nil); decodeEcho(t, body).Path != "/v2/items/42" {
		t.Fatalf("v2 not served: %s", body)
	}
	hist := p.mustCLI("history", "shop/item", "--stage", "RELEASE")
	if !strings.Contains(hist, "*  2") || !strings.Contains(hist, "/v1/items/[id]") {
		t.Fatalf("history:\n%s", hist)
	}

	// Roll back to 1, then undeploy TEST.
	if out := p.mustCLI("rollback", "shop/item", "--stage", "RELEASE", "--to", "1"); !strings.Contains(out, "serves version 1") {
		t.Fatalf("rollback: %s", out)
	}
	if _, _, body := p.call("GET", "shop.localhost", "/items/7", nil); decodeEcho(t, body).Path != "/v1/items/7" {
		t.Fatalf("rollback not served: %s", body)
	}
	p.mustCLI("undeploy", "shop/item", "--stage", "TEST")
	status, hdr, _ = p.call("GET", "shop.localhost", "/items/7", map[string]string{"X-Ca-Stage": "TEST"})
	if status != 404 || hdr.Get("X-Ca-Error-Code") == "" {
		t.Fatalf("undeployed stage answered %d %v", status, hdr)
	}
	if out := p.mustCLI("deploy", "shop/item", "--stage", "PRE", "--note", "try"); !strings.Contains(out, "serves version 1 in PRE") {
		t.Fatalf("deploy: %s", out)
	}
	apps := p.mustCLI("get", "apps", "-o", "json")
	var appList []fsm.App
	if err := json.Unmarshal([]byte(apps), &appList); err != nil || len(appList) != 1 || appList[0].Key == "" || len(appList[0].Secrets) != 1 {
		t.Fatalf("get apps: %v %s", err, apps)
	}

	// kill -9 and restart: every committed change is still there and served.
	before := p.state()
	p.kill()
	p.start()
	after := p.state()
	bj, _ := json.Marshal(before)
	aj, _ := json.Marshal(after)
	if !bytes.Equal(bj, aj) {
		t.Fatalf("state after restart differs:\nbefore %s\nafter  %s\nlog:\n%s", bj, aj, p.log)
	}
	if _, _, body := p.call("GET", "shop.localhost", "/items/9", nil); decodeEcho(t, body).Path != "/v1/items/9" {
		t.Fatalf("after restart: %s", body)
	}
	if status, _, body := p.call("GET", "shop.localhost", "/items/9", map[string]string{"X-Ca-Stage": "PRE"}); status != 200 {
		t.Fatalf("PRE after restart: %d %s", status, body)
	}
	if status, _, _ := p.call("GET", "shop.localhost", "/items/9", map[string]string{"X-Ca-Stage": "TEST"}); status != 404 {
		t.Fatalf("TEST after restart: %d", status)
	}
}

func TestE2E_BrokenFilesChangeNothing(t *testing.T) {
	backend := echoBackend(t)
	p := newNodeProc(t)
	p.start()
	files := t.TempDir()
	good := writeFile(t, files, "good.yaml", fmt.Sprintf(fileTemplate, backend, "/v1/items/[id]"))
	p.mustCLI("apply", "-f", good)
	before, _ := json.Marshal(p.state())

	cases := []struct {
		name, content, want string
	}{
		{"syntax.yaml", "groups:\n  - name: shop\n    apis: [\n", "syntax.yaml:"},
		{"stage.yaml", strings.Replace(fmt.Sprintf(fileTemplate, backend, "/x"), "deploy: [TEST, RELEASE]", "deploy: [TEST, PROD]", 1), "stage.yaml:13: groups[0].apis[0].deploy[1]"},
		{"dangling.yaml", fmt.Sprintf(fileTemplate, backend, "/x") + "grants:\n  - {app: ghost, api: shop/item, stages: [RELEASE]}\n", "dangling.yaml:23: grants[0].app"},
	}
	for _, c := range cases {
		path := writeFile(t, files, c.name, c.content)
		out, errs, code := p.cli("apply", "-f", path)
		if code == 0 {
			t.Fatalf("%s accepted: %s", c.name, out)
		}
		if !strings.Contains(errs, c.want) {
			t.Fatalf("%s: error %q lacks %q", c.name, errs, c.want)
		}
		after, _ := json.Marshal(p.state())
		if !bytes.Equal(before, after) {
			t.Fatalf("%s changed the state", c.name)
		}
	}
}
