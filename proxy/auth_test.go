package proxy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

// echoed is what echoBackend saw.
type echoed struct {
	Method  string            `json:"method"`
	URI     string            `json:"uri"`
	Path    string            `json:"path"`
	Query   map[string]string `json:"query"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// echoBackend starts a real backend on 127.0.0.1 that answers with what it received.
func echoBackend(t testing.TB) string {
	return startBackend(t, func(ctx *fasthttp.RequestCtx) {
		e := echoed{Method: string(ctx.Method()), URI: string(ctx.RequestURI()), Path: string(ctx.Path()),
			Query: map[string]string{}, Headers: map[string]string{}, Body: string(ctx.PostBody())}
		for k, v := range ctx.QueryArgs().All() {
			e.Query[string(k)] = string(v)
		}
		for k, v := range ctx.Request.Header.All() {
			e.Headers[string(k)] = string(v)
		}
		b, _ := json.Marshal(e)
		ctx.SetContentType("application/json")
		ctx.SetBody(b)
	})
}

func decodeEcho(t *testing.T, r result) echoed {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d %s: %s", r.status, r.code(), r.hdr["X-Ca-Error-Message"])
	}
	var e echoed
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("backend answer %q: %v", r.body, err)
	}
	return e
}

func appDef(url, path, auth string) fsm.APIDef {
	d := httpDef("ANY", path, url, "")
	d.Auth = auth
	return d
}

// securedGateway serves g/sig (auth: app), g/code (auth: appcode) and g/open
// (anonymous) to the echo backend, with apps "mobile" (two live secrets) and
// "blocked" (disabled), both granted g/sig and g/code in RELEASE.
func securedGateway(t *testing.T, cfg Config) (*testGateway, *stateOf) {
	url := "http://" + echoBackend(t)
	st := newStateOf().
		api("g", "sig", appDef(url, "/sig", fsm.AuthApp), fsm.StageRelease, fsm.StageTest).
		api("g", "code", appDef(url, "/code", fsm.AuthAppCode), fsm.StageRelease).
		api("g", "open", appDef(url, "/open", fsm.AuthAnonymous), fsm.StageRelease).
		app("mobile", "AK-mobile", "CODE-mobile", "secret-new", "secret-old").
		app("blocked", "AK-blocked", "CODE-blocked", "secret-blocked").
		grant("mobile", "g/sig", nil, fsm.StageRelease).
		grant("mobile", "g/code", nil, fsm.StageRelease).
		grant("blocked", "g/sig", nil, fsm.StageRelease).
		grant("blocked", "g/code", nil, fsm.StageRelease)
	b := st.s.Apps["blocked"]
	b.Disabled = true
	st.s.Apps["blocked"] = b
	return startProxy(t, cfg, st.s), st
}

func TestAppSignatureAccepted(t *testing.T) {
	g, _ := securedGateway(t, Config{})
	for _, c := range []struct {
		name, method, uri, ctype string
		body                     []byte
		sign                     func(*signature.Signer)
	}{
		{"GET with query, HmacSHA256", "GET", "/sig?b=2&a=1&empty=", "", nil, nil},
		{"GET, HmacSHA1", "GET", "/sig?q=caf%C3%A9", "", nil, func(s *signature.Signer) { s.Method = signature.HmacSHA1 }},
		{"POST form", "POST", "/sig?x=1", "application/x-www-form-urlencoded", []byte("b=2&a=hello+world"), nil},
		{"POST JSON with Content-MD5", "POST", "/sig", "application/json", []byte(`{"qty":1}`), func(s *signature.Signer) { s.ContentMD5 = true }},
		{"extra signed header", "GET", "/sig", "", nil, func(s *signature.Signer) { s.Headers = []string{"X-Custom"} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			sg := signature.NewSigner("AK-mobile", "secret-new")
			if c.sign != nil {
				c.sign(sg)
			}
			hdrs := []string{"X-Custom", "v"}
			if c.ctype != "" {
				hdrs = append(hdrs, "Content-Type", c.ctype)
			}
			e := decodeEcho(t, g.signedCall(t, sg, c.method, "g.localhost", c.uri, c.body, nil, hdrs...))
			if e.Method != c.method || e.Body != string(c.body) {
				t.Errorf("backend got %+v", e)
			}
		})
	}
}

func TestTwoLiveSecrets(t *testing.T) {
	g, _ := securedGateway(t, Config{})
	for _, secret := range []string{"secret-new", "secret-old"} {
		if r := g.signedCall(t, signature.NewSigner("AK-mobile", secret), "GET", "g.localhost", "/sig", nil, nil); r.status != 200 {
			t.Errorf("signed with %s: %d %s", secret, r.status, r.code())
		}
	}
	r := g.signedCall(t, signature.NewSigner("AK-mobile", "secret-retired"), "GET", "g.localhost", "/sig", nil, nil)
	wantError(t, r, ErrInvalidSignature)
}

func TestAppRefusals(t *testing.T) {
	g, _ := securedGateway(t, Config{})
	good := func() *signature.Signer { return signature.NewSigner("AK-mobile", "secret-new") }
	setHdr := func(k, v string) func(*fasthttp.Request) {
		return func(r *fasthttp.Request) { r.Header.Set(k, v) }
	}

	t.Run("unknown AppKey", func(t *testing.T) {
		r := g.signedCall(t, signature.NewSigner("AK-nobody", "x"), "GET", "g.localhost", "/sig", nil, nil)
		wantErrorMessage(t, r, ErrInvalidAppKey, "Invalid AppKey")
	})
	t.Run("no AppKey", func(t *testing.T) {
		wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/sig", nil), ErrInvalidAppKey, "Invalid AppKey")
	})
	t.Run("disabled app", func(t *testing.T) {
		r := g.signedCall(t, signature.NewSigner("AK-blocked", "secret-blocked"), "GET", "g.localhost", "/sig", nil, nil)
		wantErrorMessage(t, r, ErrInvalidAppKey, "Invalid AppKey")
	})
	t.Run("forged signature shows the server StringToSign", func(t *testing.T) {
		r := g.signedCall(t, good(), "GET", "g.localhost", "/sig?b=2&a=1", nil, setHdr("X-Ca-Signature", "Zm9yZ2Vk"))
		wantError(t, r, ErrInvalidSignature)
		msg := r.hdr["X-Ca-Error-Message"]
		if !strings.HasPrefix(msg, "Invalid Signature, Server StringToSign:`GET#") || !strings.HasSuffix(msg, "/sig?a=1&b=2`") ||
			!strings.Contains(msg, "#x-ca-key:AK-mobile#") {
			t.Errorf("message %q", msg)
		}
		if strings.Contains(r.body+msg, "secret") {
			t.Errorf("a secret leaked into %q %q", r.body, msg)
		}
	})
	t.Run("tampered query", func(t *testing.T) {
		r := g.signedCall(t, good(), "GET", "g.localhost", "/sig?amount=1", nil, func(r *fasthttp.Request) {
			r.URI().QueryArgs().Set("amount", "1000")
		})
		wantError(t, r, ErrInvalidSignature)
	})
	t.Run("timestamp expired", func(t *testing.T) {
		sg := good()
		sg.Now = func() time.Time { return time.Now().Add(-16 * time.Minute) }
		wantErrorMessage(t, g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil), ErrTimestampExpired, "Timestamp Expired")
		sg.Now = func() time.Time { return time.Now().Add(16 * time.Minute) }
		wantErrorMessage(t, g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil), ErrTimestampExpired, "Timestamp Expired")
	})
	t.Run("invalid timestamp", func(t *testing.T) {
		r := g.signedCall(t, good(), "GET", "g.localhost", "/sig", nil, setHdr("X-Ca-Timestamp", "yesterday"))
		wantErrorMessage(t, r, ErrInvalidTimestamp, "Invalid Timestamp")
		r = g.signedCall(t, good(), "GET", "g.localhost", "/sig", nil, func(r *fasthttp.Request) { r.Header.Del("X-Ca-Timestamp") })
		wantErrorMessage(t, r, ErrInvalidTimestamp, "Invalid Timestamp")
	})
	t.Run("nonce used", func(t *testing.T) {
		req := fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(req)
		req.Header.SetMethod("GET")
		req.SetRequestURI("/sig")
		req.Header.SetHost("g.localhost")
		req.UseHostHeader = true
		good().Sign(req)
		if r := g.do(t, req); r.status != 200 {
			t.Fatalf("first use: %d %s", r.status, r.code())
		}
		wantErrorMessage(t, g.do(t, req), ErrNonceUsed, "Nonce Used")
	})
	t.Run("no nonce", func(t *testing.T) {
		// X-Ca-Nonce is signed, so removing it and re-signing is the only way to send none.
		r := g.signedCall(t, nil, "GET", "g.localhost", "/sig", nil, func(r *fasthttp.Request) {
			good().Sign(r)
			r.Header.Del("X-Ca-Nonce")
			names := strings.ReplaceAll(string(r.Header.Peek("X-Ca-Signature-Headers")), "x-ca-nonce,", "")
			r.Header.Set("X-Ca-Signature-Headers", names)
			r.Header.Set("X-Ca-Signature", resign(t, r, "secret-new"))
		})
		wantErrorMessage(t, r, ErrInvalidNonce, "Invalid Nonce")
	})
	t.Run("Content-MD5 mismatch", func(t *testing.T) {
		sg := good()
		sg.ContentMD5 = true
		r := g.signedCall(t, sg, "POST", "g.localhost", "/sig", []byte(`{"amount":1}`), func(r *fasthttp.Request) {
			r.SetBody([]byte(`{"amount":9}`))
		}, "Content-Type", "application/json")
		wantErrorMessage(t, r, ErrInvalidMD5, "Invalid Content-MD5")
	})
	t.Run("unknown signature method", func(t *testing.T) {
		r := g.signedCall(t, good(), "GET", "g.localhost", "/sig", nil, setHdr("X-Ca-Signature-Method", "HmacMD5"))
		wantErrorMessage(t, r, ErrInvalidSignatureMethod, "Invalid Signature Method")
	})
}

// resign computes X-Ca-Signature for r as it stands (the test's own HMAC over the
// package's string-to-sign, whose correctness signature/ tests against Alibaba's
// vectors).
func resign(t *testing.T, r *fasthttp.Request, secret string) string {
	t.Helper()
	sts := signature.AppendStringToSign(nil, r)
	return hmacB64(secret, sts)
}

func TestSignatureWindowConfigurable(t *testing.T) {
	g, _ := securedGateway(t, Config{SignatureWindow: time.Minute})
	sg := signature.NewSigner("AK-mobile", "secret-new")
	sg.Now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	wantError(t, g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil), ErrTimestampExpired)
	sg.Now = func() time.Time { return time.Now().Add(-30 * time.Second) }
	if r := g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil); r.status != 200 {
		t.Errorf("30s old within a 1m window: %d %s", r.status, r.code())
	}
}

func TestAppCode(t *testing.T) {
	g, _ := securedGateway(t, Config{})
	e := decodeEcho(t, g.call(t, "GET", "g.localhost", "/code?x=1", nil, "Authorization", "APPCODE CODE-mobile"))
	if _, ok := e.Headers["Authorization"]; ok {
		t.Errorf("the AppCode reached the backend: %v", e.Headers)
	}
	e = decodeEcho(t, g.call(t, "GET", "g.localhost", "/code?AppCode=CODE-mobile&x=1", nil))
	if _, ok := e.Query["AppCode"]; ok || e.Query["x"] != "1" {
		t.Errorf("backend query %v", e.Query)
	}
	decodeEcho(t, g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "appcode  CODE-mobile"))

	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/code", nil), ErrInvalidAppCode, "Invalid AppCode")
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "APPCODE nope"), ErrInvalidAppCode, "Invalid AppCode")
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/code?AppCode=nope", nil), ErrInvalidAppCode, "Invalid AppCode")
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "APPCODE CODE-blocked"), ErrInvalidAppCode, "Invalid AppCode")
	// An app API does not take an AppCode.
	wantError(t, g.call(t, "GET", "g.localhost", "/sig", nil, "Authorization", "APPCODE CODE-mobile"), ErrInvalidAppKey)
}

func TestGrants(t *testing.T) {
	g, st := securedGateway(t, Config{})
	call := func(stage string) result {
		sg := signature.NewSigner("AK-mobile", "secret-new")
		sg.Stage = stage
		return g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil)
	}
	if r := call(""); r.status != 200 {
		t.Fatalf("granted call: %d %s", r.status, r.code())
	}
	// The grant covers RELEASE only; the API is deployed to TEST too.
	wantErrorMessage(t, call("TEST"), ErrUnauthorized, "Unauthorized: TEST")

	past, future := time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	next := st.copyState().grant("mobile", "g/sig", &past, fsm.StageRelease, fsm.StageTest)
	g.p.Update(next.s)
	wantErrorMessage(t, call(""), ErrGrantExpired, "Expiry of Authorization")
	wantErrorMessage(t, call("TEST"), ErrGrantExpired, "Expiry of Authorization")

	next = next.copyState().grant("mobile", "g/sig", &future, fsm.StageRelease, fsm.StageTest)
	g.p.Update(next.s)
	if r := call("TEST"); r.status != 200 {
		t.Fatalf("renewed grant: %d %s", r.status, r.code())
	}

	// An app with no grant of the API at all.
	next = next.copyState().app("other", "AK-other", "CODE-other", "secret-other")
	g.p.Update(next.s)
	r := g.signedCall(t, signature.NewSigner("AK-other", "secret-other"), "GET", "g.localhost", "/sig", nil, nil)
	wantErrorMessage(t, r, ErrUnauthorized, "Unauthorized")
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "APPCODE CODE-other"), ErrUnauthorized, "Unauthorized")
}

// TestRevokeTakesEffectOnNextRequest: revoking a grant or disabling an app refuses the
// very next request after Update, while calls keep flowing; the route for the API
// version itself is reused across the change.
func TestRevokeTakesEffectOnNextRequest(t *testing.T) {
	g, st := securedGateway(t, Config{})
	sg := signature.NewSigner("AK-mobile", "secret-new")
	if r := g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil); r.status != 200 {
		t.Fatalf("before revoke: %d %s", r.status, r.code())
	}
	before := g.p.table.Load().hosts["g.localhost"].stages[2]

	revoked := st.copyState()
	delete(revoked.s.Grants, fsm.GrantKey("mobile", "g/sig"))
	revoked.s.Index++
	g.p.Update(revoked.s)
	wantErrorMessage(t, g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil), ErrUnauthorized, "Unauthorized")
	if r := g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "APPCODE CODE-mobile"); r.status != 200 {
		t.Fatalf("the other grant was revoked too: %d %s", r.status, r.code())
	}
	after := g.p.table.Load().hosts["g.localhost"].stages[2]
	rb, _ := before.lookup(0, []byte("/sig"), &params{})
	ra, _ := after.lookup(0, []byte("/sig"), &params{})
	if rb == nil || rb != ra {
		t.Errorf("the route of an unchanged version was compiled again (%p, %p)", rb, ra)
	}

	disabled := revoked.copyState()
	a := disabled.s.Apps["mobile"]
	a.Disabled = true
	disabled.s.Apps["mobile"] = a
	disabled.s.Index++
	g.p.Update(disabled.s)
	wantError(t, g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "APPCODE CODE-mobile"), ErrInvalidAppCode)

	g.p.Update(st.s) // granted again
	if r := g.signedCall(t, sg, "GET", "g.localhost", "/sig", nil, nil); r.status != 200 {
		t.Fatalf("after re-grant: %d %s", r.status, r.code())
	}
}

// TestRevokeUnderLoad: with clients calling continuously, no call succeeds once the
// Update that revokes the grant has returned.
func TestRevokeUnderLoad(t *testing.T) {
	g, st := securedGateway(t, Config{})
	revoked := st.copyState()
	delete(revoked.s.Grants, fsm.GrantKey("mobile", "g/code"))
	revoked.s.Index++

	var revokedAt atomic.Int64
	var wg sync.WaitGroup
	var lateOK, ok200 atomic.Int64
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now().UnixNano()
				r := g.call(t, "GET", "g.localhost", "/code", nil, "Authorization", "APPCODE CODE-mobile")
				if r.status == 200 {
					ok200.Add(1)
					if at := revokedAt.Load(); at != 0 && sent > at {
						lateOK.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	g.p.Update(revoked.s)
	revokedAt.Store(time.Now().UnixNano())
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if ok200.Load() == 0 {
		t.Fatal("no call succeeded before the revoke")
	}
	if n := lateOK.Load(); n != 0 {
		t.Errorf("%d calls sent after the revoke committed were let through", n)
	}
}

func hmacB64(secret string, msg []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(msg)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
