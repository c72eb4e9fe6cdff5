package node

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/signature"
)

// TestRefusalsThroughNode sends each refused call of the error table to a real
// in-process node (raft, gossip, the cluster-wide nonce store and limiter, the data
// plane on a socket) and checks the status, code and message it answers.
func TestRefusalsThroughNode(t *testing.T) {
	n := startNode(t, "refusals", nil)

	past := time.Now().Add(-time.Hour)
	three := "3"
	max14 := 14.0
	mock := fsm.Backend{Type: fsm.BackendMock, Status: 200, Body: "ok"}
	api := func(name, path, auth string) fsm.APISpec {
		return fsm.APISpec{Name: name, APIDef: fsm.APIDef{Method: "ANY", Path: path, Auth: auth, Backend: mock},
			Deploy: []fsm.Stage{fsm.StageRelease}}
	}
	city := api("city", "/cities/[city]", fsm.AuthApp)
	city.Params = []fsm.Param{
		{Name: "city", In: fsm.InPath, Type: "string", Required: true, Regex: "^[a-z]+$"},
		{Name: "days", In: fsm.InQuery, Type: "int", Max: &max14, Default: &three},
		{Name: "unit", In: fsm.InQuery, Type: "string", Required: true, Enum: []string{"c", "f"}},
	}
	denied := api("denied", "/denied", fsm.AuthAnonymous)
	denied.IPPolicy = "no-loopback"
	limited := api("limited", "/limited", fsm.AuthAnonymous)
	limited.Traffic = "two"
	bundle := &fsm.Bundle{
		Groups: []fsm.GroupSpec{{Name: "g", APIs: []fsm.APISpec{city, denied, limited, api("expired", "/expired", fsm.AuthApp)}}},
		Apps:   []fsm.AppSpec{{Name: "mobile", Owner: "alice", Key: "AK-refusals", Secret: "SK-refusals-secret-0", Code: "CODE-refusals"}},
		Grants: []fsm.GrantSpec{
			{App: "mobile", API: "g/city", Stages: []fsm.Stage{fsm.StageRelease}},
			{App: "mobile", API: "g/expired", Stages: []fsm.Stage{fsm.StageRelease}, Expires: &past},
		},
		IPPolicies: []fsm.IPPolicy{{Name: "no-loopback", Deny: []string{"127.0.0.0/8", "::1/128"}}},
		Traffic:    []fsm.TrafficSpec{{Name: "two", Window: fsm.WindowMinute, API: 2}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := NewClient(n.AdminAddr(), n.Token()).Apply(ctx, bundle, false); err != nil {
		t.Fatalf("apply: %v", err)
	}

	newReq := func(uri string) *http.Request {
		req, err := http.NewRequest("GET", "http://"+n.DataAddr()+uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "g.localhost"
		return req
	}
	sign := func(req *http.Request, edit func(*signature.Signer)) *http.Request {
		s := signature.NewSigner("AK-refusals", "SK-refusals-secret-0")
		if edit != nil {
			edit(s)
		}
		if _, err := s.SignHTTP(req); err != nil {
			t.Fatal(err)
		}
		return req
	}
	send := func(req *http.Request) (int, string, string) {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Ca-Error-Code"), resp.Header.Get("X-Ca-Error-Message")
	}
	want := func(name string, req *http.Request, e *proxy.ErrorCode, msg string) {
		t.Helper()
		st, code, m := send(req)
		if st != e.Status || code != e.Code || !strings.HasPrefix(m, msg) {
			t.Errorf("%s: got %d %s %q, want %d %s %q", name, st, code, m, e.Status, e.Code, msg)
		}
	}

	if st, code, m := send(sign(newReq("/cities/paris?unit=c"), nil)); st != 200 {
		t.Fatalf("a good signed call: %d %s %s", st, code, m)
	}
	want("timestamp expired", sign(newReq("/cities/paris?unit=c"), func(s *signature.Signer) {
		s.Now = func() time.Time { return time.Now().Add(-20 * time.Minute) }
	}), proxy.ErrTimestampExpired, "Timestamp Expired")
	bad := sign(newReq("/cities/paris?unit=c"), nil)
	bad.Header.Set("X-Ca-Timestamp", "yesterday")
	want("invalid timestamp", bad, proxy.ErrInvalidTimestamp, "Invalid Timestamp")
	md5 := sign(newReq("/cities/paris?unit=c"), nil)
	md5.Header.Set("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")
	want("content-md5", md5, proxy.ErrInvalidMD5, "Invalid Content-MD5")
	once := sign(newReq("/cities/paris?unit=c"), nil)
	replay := once.Clone(context.Background())
	if st, _, _ := send(once); st != 200 {
		t.Fatalf("first use of a nonce: %d", st)
	}
	want("nonce used", replay, proxy.ErrNonceUsed, "Nonce Used")
	want("grant expired", sign(newReq("/expired"), nil), proxy.ErrGrantExpired, "Expiry of Authorization")
	want("invalid parameter", sign(newReq("/cities/paris?unit=c&days=99"), nil), proxy.ErrInvalidParam, "Invalid Parameter: days (max 14)")
	want("missing parameter", sign(newReq("/cities/paris"), nil), proxy.ErrMissingParam, "Required Parameter Missing: unit")
	want("ip denied", newReq("/denied"), proxy.ErrIPDenied, "Access Denied By IP Control")
	for i := 0; i < 2; i++ {
		if st, code, _ := send(newReq("/limited")); st != 200 {
			t.Fatalf("call %d within the quota: %d %s", i, st, code)
		}
	}
	want("throttled", newReq("/limited"), proxy.ErrThrottledAPI, "Throttled by API Flow Control")
}
