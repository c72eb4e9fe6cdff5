package proxy

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

func hs256(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJWTAuth: auth: jwt through a served gateway, with claims passed to the backend.
func TestJWTAuth(t *testing.T) {
	url := "http://" + echoBackend(t)
	def := appDef(url, "/me", fsm.AuthJWT)
	def.JWT = &fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "HS256", Secret: "jwt-secret-0123456789abcdef0123456789"}}, Issuer: "idp",
		Claims: []fsm.ClaimToParam{{Claim: "sub", In: fsm.InHeader, Name: "X-User"}}, SingleUse: true}
	g := startProxy(t, Config{}, newStateOf().api("g", "me", def, fsm.StageRelease).s)
	now := time.Now()
	good := jwt.MapClaims{"sub": "bob", "iss": "idp", "exp": now.Add(time.Hour).Unix(), "jti": "t1"}
	tok := hs256(t, "jwt-secret-0123456789abcdef0123456789", good)
	e := decodeEcho(t, g.call(t, "GET", "g.localhost", "/me", nil, "Authorization", "Bearer "+tok))
	if e.Headers["X-User"] != "bob" {
		t.Errorf("claim header %q", e.Headers["X-User"])
	}
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/me", nil, "Authorization", "Bearer "+tok), ErrInvalidToken, "Invalid Token: Token Replayed")
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/me", nil), ErrInvalidToken, "Invalid Token: Missing Token")
	forged := hs256(t, "another-secret-0123456789abcdef012345", jwt.MapClaims{"sub": "bob", "iss": "idp", "exp": now.Add(time.Hour).Unix(), "jti": "t2"})
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/me", nil, "Authorization", "Bearer "+forged), ErrInvalidToken, "Invalid Token: Invalid Token")
	expired := hs256(t, "jwt-secret-0123456789abcdef0123456789", jwt.MapClaims{"sub": "bob", "iss": "idp", "exp": now.Add(-time.Hour).Unix(), "jti": "t3"})
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/me", nil, "Authorization", "Bearer "+expired), ErrInvalidToken, "Invalid Token: Token Expired")
}

// TestIPControl: an API-wide policy checked before auth, and a per-app list checked
// once the app is known; a changed policy applies on the next request.
func TestIPControl(t *testing.T) {
	url := "http://" + echoBackend(t)
	open := appDef(url, "/open", fsm.AuthAnonymous)
	open.IPPolicy = "office"
	sig := appDef(url, "/sig", fsm.AuthApp)
	sig.IPPolicy = "per-app"
	st := newStateOf().
		api("g", "open", open, fsm.StageRelease).
		api("g", "sig", sig, fsm.StageRelease).
		app("mobile", "AK1", "C1", "s1").app("other", "AK2", "C2", "s2").
		grant("mobile", "g/sig", nil, fsm.StageRelease).grant("other", "g/sig", nil, fsm.StageRelease)
	st.s.IPPolicies["office"] = fsm.IPPolicy{Name: "office", Allow: []string{"127.0.0.0/8"}}
	st.s.IPPolicies["per-app"] = fsm.IPPolicy{Name: "per-app", Apps: []fsm.IPAppPolicy{{App: "other", Allow: []string{"10.0.0.0/8"}}}}
	g := startProxy(t, Config{}, st.s)

	decodeEcho(t, g.call(t, "GET", "g.localhost", "/open", nil))
	decodeEcho(t, g.signedCall(t, signature.NewSigner("AK1", "s1"), "GET", "g.localhost", "/sig", nil, nil))
	wantErrorMessage(t, g.signedCall(t, signature.NewSigner("AK2", "s2"), "GET", "g.localhost", "/sig", nil, nil), ErrIPDenied, "Access Denied By IP Control")

	next := st.copyState()
	next.s.IPPolicies["office"] = fsm.IPPolicy{Name: "office", Deny: []string{"127.0.0.1"}}
	next.s.Index++
	g.p.Update(next.s)
	wantErrorMessage(t, g.call(t, "GET", "g.localhost", "/open", nil), ErrIPDenied, "Access Denied By IP Control")

	// Behind a trusted proxy, X-Forwarded-For names the client.
	g2 := startProxy(t, Config{TrustedProxies: []string{"127.0.0.1"}}, st.s)
	decodeEcho(t, g2.signedCall(t, signature.NewSigner("AK2", "s2"), "GET", "g.localhost", "/sig", nil, nil, "X-Forwarded-For", "10.1.2.3"))
	wantError(t, g2.call(t, "GET", "g.localhost", "/open", nil, "X-Forwarded-For", "192.0.2.7"), ErrIPDenied)
}
