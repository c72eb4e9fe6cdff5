package node

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// TestQuotasHoldAcrossNodes calls three real nodes round-robin and concurrently through
// their data planes: an API limit, an app limit, a user limit and a special each admit
// their quota (within max(1%, 2 calls)) cluster-wide, not per node; and a nonce used on
// one node is refused on another.
func TestQuotasHoldAcrossNodes(t *testing.T) {
	c := MakeCluster(t, 3, ClusterOptions{})
	nodes := c.Up()
	mock := fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: "ok"}
	api := func(name, auth, traffic string) fsm.APISpec {
		return fsm.APISpec{Name: name, APIDef: fsm.APIDef{Method: "GET", Path: "/" + name, Auth: auth, Backend: mock, Traffic: traffic},
			Deploy: []fsm.Stage{fsm.StageRelease}}
	}
	app := func(name, owner string) fsm.AppSpec {
		return fsm.AppSpec{Name: name, Owner: owner, Key: "AK-" + name, Secret: "SK-" + name + "-0123456789", Code: "CODE-" + name}
	}
	grant := func(a, ref string) fsm.GrantSpec {
		return fsm.GrantSpec{App: a, API: ref, Stages: []fsm.Stage{fsm.StageRelease}}
	}
	b := &fsm.Bundle{
		Groups: []fsm.GroupSpec{{Name: "q", APIs: []fsm.APISpec{
			api("perapi", fsm.AuthAnonymous, "api60"),
			api("perapp", fsm.AuthAppCode, "app40"),
			api("peruser", fsm.AuthAppCode, "user50"),
			api("special", fsm.AuthAppCode, "special"),
			api("signed", fsm.AuthApp, ""),
		}}},
		Apps: []fsm.AppSpec{app("a1", "alice"), app("a2", "alice"), app("vip", "bob")},
		Grants: []fsm.GrantSpec{grant("a1", "q/perapp"), grant("a1", "q/peruser"), grant("a2", "q/peruser"),
			grant("a1", "q/special"), grant("vip", "q/special"), grant("a1", "q/signed")},
		Traffic: []fsm.TrafficSpec{
			{Name: "api60", Window: fsm.WindowHour, API: 60},
			{Name: "app40", Window: fsm.WindowHour, API: 1000, User: 500, App: 40},
			{Name: "user50", Window: fsm.WindowHour, API: 1000, User: 50, App: 40},
			{Name: "special", Window: fsm.WindowHour, API: 1000, App: 10, Special: []fsm.TrafficSpecial{{App: "vip", Limit: 30}}},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := nodes[1].Client().Apply(ctx, b, false); err != nil {
		t.Fatal(err)
	}
	c.EnsureSame(10 * time.Second)

	client := &http.Client{Timeout: 10 * time.Second}
	send := func(n *Node, path string, hdr map[string]string, sign *signature.Signer) int {
		req, _ := http.NewRequest("GET", "http://"+n.DataAddr()+path, nil)
		req.Host = "q.localhost"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if sign != nil {
			sign.SignHTTP(req)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// burst sends calls spread round-robin over the nodes from 6 concurrent callers
	// and returns how many were admitted. A node that has spent its part of a quota
	// refuses calls (Retry-After: one flush) until its peers acknowledge its refill, so
	// a burst can end with part of the quota still free; like a client honouring
	// Retry-After, burst then goes on one call at a time, a flush apart, while fewer
	// than want were admitted (3 s and 300 calls at most). The quota must become
	// available whole, and never more than it.
	burst := func(calls, want int, path string, hdrs ...map[string]string) int {
		var next, ok atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= int64(calls) {
						return
					}
					var h map[string]string
					if len(hdrs) > 0 {
						h = hdrs[int(i)%len(hdrs)]
					}
					if send(nodes[int(i)%len(nodes)].Node(), path, h, nil) == 200 {
						ok.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		admitted := int(ok.Load())
		deadline := time.Now().Add(3 * time.Second)
		for i := calls; admitted < want && i < calls+300 && time.Now().Before(deadline); i++ {
			var h map[string]string
			if len(hdrs) > 0 {
				h = hdrs[i%len(hdrs)]
			}
			if send(nodes[i%len(nodes)].Node(), path, h, nil) == 200 {
				admitted++
			} else {
				time.Sleep(5 * time.Millisecond)
			}
		}
		return admitted
	}
	within := func(name string, got, want int) {
		t.Helper()
		tol := max(want/100, 2)
		t.Logf("%s: admitted %d", name, got)
		if got < want-tol || got > want+tol {
			t.Errorf("%s: admitted %d, want %d ± %d", name, got, want, tol)
		}
	}
	code := func(app string) map[string]string { return map[string]string{"Authorization": "APPCODE CODE-" + app} }

	within("API limit 60", burst(150, 60, "/perapi"), 60)
	within("app limit 40", burst(120, 40, "/perapp", code("a1")), 40)
	within("user limit 50 over two apps", burst(150, 50, "/peruser", code("a1"), code("a2")), 50)
	within("special app limit 30", burst(90, 30, "/special", code("vip")), 30)
	within("default app limit 10 beside the special", burst(40, 10, "/special", code("a1")), 10)

	// A nonce used on one node is refused on another once gossip has carried it.
	s := signature.NewSigner("AK-a1", "SK-a1-0123456789")
	req, _ := http.NewRequest("GET", "http://"+nodes[0].Node().DataAddr()+"/signed", nil)
	req.Host = "q.localhost"
	s.SignHTTP(req)
	replay := req.Clone(context.Background())
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first use: %v %v", err, resp)
	}
	time.Sleep(50 * time.Millisecond) // gossip carries a nonce in a few ms
	replay.URL.Host = nodes[2].Node().DataAddr()
	resp, err := client.Do(replay)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("X-Ca-Error-Code") != "A400NU" {
		t.Fatalf("replay on another node: %d %s", resp.StatusCode, resp.Header.Get("X-Ca-Error-Code"))
	}
}
