package access

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

// Keys are generated once per test binary: RSA generation is the slow part of the suite.
var testKeys = sync.OnceValue(func() (k struct {
	rsaA, rsaB *rsa.PrivateKey
	ec         *ecdsa.PrivateKey
	ec384      *ecdsa.PrivateKey
	ed         ed25519.PrivateKey
}) {
	var err error
	if k.rsaA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsaB, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

const hsSecret = "a-shared-secret-of-at-least-32-bytes!"

// t0 is the fixed "now" of the tests: time is a parameter of Verify, not a clock.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func pemOf(t testing.TB, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// good returns claims that pass every check of stdSpec at t0.
func good() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "https://id.example.com",
		"aud": []string{"other", "tollgate"},
		"sub": "user-42",
		"exp": t0.Add(time.Hour).Unix(),
		"nbf": t0.Add(-time.Minute).Unix(),
		"jti": "id-1",
	}
}

func stdSpec(t testing.TB) *fsm.JWTSpec {
	k := testKeys()
	return &fsm.JWTSpec{
		Issuer:   "https://id.example.com",
		Audience: "tollgate",
		Keys: []fsm.JWTKey{
			{Alg: "HS256", Kid: "hs", Secret: hsSecret},
			{Alg: "RS256", Kid: "rs", PEM: pemOf(t, &k.rsaA.PublicKey)},
			{Alg: "ES256", Kid: "es", PEM: pemOf(t, &k.ec.PublicKey)},
			{Alg: "PS256", Kid: "ps", PEM: pemOf(t, &k.rsaA.PublicKey)},
			{Alg: "EdDSA", Kid: "ed", PEM: pemOf(t, k.ed.Public())},
		},
	}
}

func mustJWT(t testing.TB, spec *fsm.JWTSpec) *JWTVerifier {
	t.Helper()
	v, err := CompileJWT(spec)
	if err != nil {
		t.Fatalf("CompileJWT: %v", err)
	}
	return v
}

func bearer(token string) *fasthttp.Request {
	req := new(fasthttp.Request)
	req.SetRequestURI("http://api.example.com/items")
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

func TestJWTValidTokens(t *testing.T) {
	k := testKeys()
	v := mustJWT(t, stdSpec(t))
	for _, c := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
	}{
		{"HS256", jwt.SigningMethodHS256, []byte(hsSecret), "hs"},
		{"RS256", jwt.SigningMethodRS256, k.rsaA, "rs"},
		{"ES256", jwt.SigningMethodES256, k.ec, "es"},
		{"PS256", jwt.SigningMethodPS256, k.rsaA, "ps"},
		{"EdDSA", jwt.SigningMethodEdDSA, k.ed, "ed"},
		{"RS256 without kid", jwt.SigningMethodRS256, k.rsaA, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, err := v.Verify(bearer(sign(t, c.method, c.key, c.kid, good())), t0)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if sub, ok := cl.Get("sub"); !ok || sub != "user-42" {
				t.Errorf("sub = %q, %v", sub, ok)
			}
		})
	}
}

func TestJWTRefusals(t *testing.T) {
	k := testKeys()
	spec := stdSpec(t)
	v := mustJWT(t, spec)
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := good()
		mod(c)
		return c
	}
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, k.rsaA, "rs", c) }
	tampered := func() string {
		s := rs(good())
		parts := strings.Split(s, ".")
		c := good()
		c["sub"] = "admin"
		b, _ := json.Marshal(c)
		parts[1] = base64.RawURLEncoding.EncodeToString(b)
		return strings.Join(parts, ".")
	}
	none := func() string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodNone, good()).SignedString(jwt.UnsafeAllowNoneSignatureType)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The classic confusion attack: HMAC over the token with the RSA public key's PEM
	// as the secret, claiming the RSA key's kid.
	confused := func(kid string) string {
		return sign(t, jwt.SigningMethodHS256, []byte(spec.Keys[1].PEM), kid, good())
	}
	crit := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodRS256, good())
		tok.Header["crit"] = []string{"exp"}
		s, err := tok.SignedString(k.rsaA)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cases := []struct {
		name  string
		token string
		want  error
	}{
		{"expired", rs(with(func(c jwt.MapClaims) { c["exp"] = t0.Add(-time.Hour).Unix() })), ErrTokenExpired},
		{"expired just beyond leeway", rs(with(func(c jwt.MapClaims) { c["exp"] = t0.Add(-DefaultLeeway).Unix() })), ErrTokenExpired},
		{"nbf in the future", rs(with(func(c jwt.MapClaims) { c["nbf"] = t0.Add(time.Hour).Unix() })), ErrTokenNotYetValid},
		{"exp of the wrong type", rs(with(func(c jwt.MapClaims) { c["exp"] = "tomorrow" })), ErrInvalidToken},
		{"wrong iss", rs(with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com" })), ErrTokenIssuer},
		{"no iss", rs(with(func(c jwt.MapClaims) { delete(c, "iss") })), ErrTokenIssuer},
		{"wrong aud", rs(with(func(c jwt.MapClaims) { c["aud"] = "someone-else" })), ErrTokenAudience},
		{"no aud", rs(with(func(c jwt.MapClaims) { delete(c, "aud") })), ErrTokenAudience},
		{"bad signature: payload changed", tampered(), ErrInvalidToken},
		{"bad signature: another RSA key", sign(t, jwt.SigningMethodRS256, k.rsaB, "rs", good()), ErrInvalidToken},
		{"bad signature: another HS secret", sign(t, jwt.SigningMethodHS256, []byte("guess"), "hs", good()), ErrInvalidToken},
		{"alg none", none(), ErrInvalidToken},
		{"HS token signed with the RS key's PEM, RS kid", confused("rs"), ErrInvalidToken},
		{"HS token signed with the RS key's PEM, no kid", confused(""), ErrInvalidToken},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, k.rsaA, "nope", good()), ErrInvalidToken},
		{"algorithm no key is for", sign(t, jwt.SigningMethodES384, k.ec384, "", good()), ErrInvalidToken},
		{"crit header", crit(), ErrInvalidToken},
		{"not a JWT", "abc.def", ErrInvalidToken},
		{"too long", strings.Repeat("a", maxTokenLen+1), ErrInvalidToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, err := v.Verify(bearer(c.token), t0)
			if err != c.want {
				t.Fatalf("Verify = %v, %v; want %v", cl, err, c.want)
			}
		})
	}

	// Missing token, in each way it can be missing.
	for _, req := range []*fasthttp.Request{bearer(""), bearer("  "), new(fasthttp.Request)} {
		if _, err := v.Verify(req, t0); err != ErrMissingToken {
			t.Errorf("no token: %v, want ErrMissingToken", err)
		}
	}
}

// An HS-only API never accepts an RS-signed token, and an RS-only API never uses its
// public key as an HMAC secret.
func TestJWTNoAlgConfusion(t *testing.T) {
	k := testKeys()
	rsPEM := pemOf(t, &k.rsaA.PublicKey)
	rsOnly := mustJWT(t, &fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "RS256", PEM: rsPEM}}})
	for _, m := range []*jwt.SigningMethodHMAC{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512} {
		tok := sign(t, m, []byte(rsPEM), "", good())
		if _, err := rsOnly.Verify(bearer(tok), t0); err != ErrInvalidToken {
			t.Errorf("%s with the PEM as secret: %v, want ErrInvalidToken", m.Alg(), err)
		}
	}
	hsOnly := mustJWT(t, &fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "HS256", Secret: hsSecret}}})
	if _, err := hsOnly.Verify(bearer(sign(t, jwt.SigningMethodRS256, k.rsaA, "", good())), t0); err != ErrInvalidToken {
		t.Errorf("RS256 token on an HS256 API: %v", err)
	}
	// The right tokens pass, so the refusals above are about the algorithm.
	if _, err := rsOnly.Verify(bearer(sign(t, jwt.SigningMethodRS256, k.rsaA, "", good())), t0); err != nil {
		t.Errorf("RS256 on the RS API: %v", err)
	}
	if _, err := hsOnly.Verify(bearer(sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", good())), t0); err != nil {
		t.Errorf("HS256 on the HS API: %v", err)
	}
}

func TestJWTLeeway(t *testing.T) {
	k := testKeys()
	v := mustJWT(t, &fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "ES256", PEM: pemOf(t, &k.ec.PublicKey)}}})
	exp := jwt.MapClaims{"exp": t0.Unix()}
	nbf := jwt.MapClaims{"nbf": t0.Unix()}
	te := sign(t, jwt.SigningMethodES256, k.ec, "", exp)
	tn := sign(t, jwt.SigningMethodES256, k.ec, "", nbf)
	// exp at t0: valid until t0+leeway, exclusive; nbf at t0: valid from t0-leeway.
	checks := []struct {
		token string
		now   time.Time
		want  error
	}{
		{te, t0.Add(DefaultLeeway - time.Second), nil},
		{te, t0.Add(DefaultLeeway), ErrTokenExpired},
		{tn, t0.Add(-DefaultLeeway), nil},
		{tn, t0.Add(-DefaultLeeway - time.Second), ErrTokenNotYetValid},
	}
	for i, c := range checks {
		if _, err := v.Verify(bearer(c.token), c.now); err != c.want {
			t.Errorf("check %d: %v, want %v", i, err, c.want)
		}
	}
	v.Leeway = 0
	if _, err := v.Verify(bearer(te), t0); err != ErrTokenExpired {
		t.Errorf("no leeway, now == exp: %v, want ErrTokenExpired", err)
	}
	if _, err := v.Verify(bearer(tn), t0); err != nil {
		t.Errorf("no leeway, now == nbf: %v", err)
	}
}

// memReplays is an in-memory ReplayStore remembering ids for a window.
type memReplays struct {
	mu     sync.Mutex
	window time.Duration
	seen   map[string]time.Time
}

func (m *memReplays) Use(id []byte, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if until, ok := m.seen[string(id)]; ok && now.Before(until) {
		return false
	}
	m.seen[string(id)] = now.Add(m.window)
	return true
}

func TestJWTSingleUse(t *testing.T) {
	k := testKeys()
	spec := &fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "RS256", PEM: pemOf(t, &k.rsaA.PublicKey)}}, SingleUse: true}
	v := mustJWT(t, spec)
	tok := sign(t, jwt.SigningMethodRS256, k.rsaA, "", good())

	if _, err := v.Verify(bearer(tok), t0); err != ErrNoReplayStore {
		t.Fatalf("single use without a store: %v, want ErrNoReplayStore", err)
	}
	store := &memReplays{window: time.Hour, seen: map[string]time.Time{}}
	v.Replays = store
	if _, err := v.Verify(bearer(tok), t0); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, err := v.Verify(bearer(tok), t0.Add(time.Second)); err != ErrTokenReplayed {
		t.Fatalf("second use: %v, want ErrTokenReplayed", err)
	}
	// Another jti is another token.
	c := good()
	c["jti"] = "id-2"
	if _, err := v.Verify(bearer(sign(t, jwt.SigningMethodRS256, k.rsaA, "", c)), t0); err != nil {
		t.Fatalf("other jti: %v", err)
	}
	// The same jti from another issuer is another token.
	c = good()
	c["iss"] = "https://other.example.com"
	if _, err := v.Verify(bearer(sign(t, jwt.SigningMethodRS256, k.rsaA, "", c)), t0); err != nil {
		t.Fatalf("same jti, other issuer: %v", err)
	}
	// No jti, or no exp: nothing a store could remember safely.
	for _, drop := range []string{"jti", "exp"} {
		c = good()
		c["jti"] = "id-" + drop
		delete(c, drop)
		if _, err := v.Verify(bearer(sign(t, jwt.SigningMethodRS256, k.rsaA, "", c)), t0); err != ErrInvalidToken {
			t.Errorf("single use without %s: %v, want ErrInvalidToken", drop, err)
		}
	}
	// A refused token does not spend its jti.
	c = good()
	c["jti"] = "id-3"
	late := sign(t, jwt.SigningMethodRS256, k.rsaA, "", c)
	if _, err := v.Verify(bearer(late), t0.Add(2*time.Hour)); err != ErrTokenExpired {
		t.Fatalf("expired: %v", err)
	}
	if _, err := v.Verify(bearer(late), t0); err != nil {
		t.Fatalf("the jti of a refused token was spent: %v", err)
	}
	// Ids are namespaced away from signature nonces sharing the store.
	for id := range store.seen {
		if !strings.HasPrefix(id, "jwt\x00") {
			t.Errorf("id %q lacks the jwt prefix", id)
		}
	}
}

func TestJWTTokenLocations(t *testing.T) {
	tok := sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "", good())
	keys := []fsm.JWTKey{{Alg: "HS256", Secret: hsSecret}}
	cases := []struct {
		from  string
		build func(*fasthttp.Request)
	}{
		{"", func(r *fasthttp.Request) { r.Header.Set("Authorization", "Bearer "+tok) }},
		{"", func(r *fasthttp.Request) { r.Header.Set("Authorization", "bearer  "+tok) }},
		{"", func(r *fasthttp.Request) { r.Header.Set("Authorization", tok) }},
		{"header:X-Token", func(r *fasthttp.Request) { r.Header.Set("x-token", tok) }},
		{"query:access_token", func(r *fasthttp.Request) { r.SetRequestURI("http://h/p?a=1&access_token=" + tok) }},
		{"cookie:session", func(r *fasthttp.Request) { r.Header.SetCookie("session", tok) }},
	}
	for _, c := range cases {
		v := mustJWT(t, &fsm.JWTSpec{From: c.from, Keys: keys})
		req := new(fasthttp.Request)
		req.SetRequestURI("http://h/p")
		c.build(req)
		if _, err := v.Verify(req, t0); err != nil {
			t.Errorf("from %q: %v", c.from, err)
		}
		// The token in another place than the API reads is no token.
		other := new(fasthttp.Request)
		other.SetRequestURI("http://h/p?token=" + tok)
		other.Header.Set("X-Other", tok)
		if _, err := v.Verify(other, t0); err != ErrMissingToken {
			t.Errorf("from %q, token elsewhere: %v, want ErrMissingToken", c.from, err)
		}
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(pub *rsa.PublicKey, kid, alg string) map[string]string {
	m := map[string]string{"kty": "RSA", "n": b64u(pub.N.Bytes()), "e": b64u(big.NewInt(int64(pub.E)).Bytes())}
	if kid != "" {
		m["kid"] = kid
	}
	if alg != "" {
		m["alg"] = alg
	}
	return m
}

func ecJWK(pub *ecdsa.PublicKey, kid string) map[string]string {
	b, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	n := (len(b) - 1) / 2
	return map[string]string{"kty": "EC", "crv": pub.Curve.Params().Name, "kid": kid, "x": b64u(b[1 : 1+n]), "y": b64u(b[1+n:])}
}

func jwks(t testing.TB, keys ...map[string]string) fsm.JSONDoc {
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return fsm.JSONDoc(b)
}

func TestJWKSKidSelection(t *testing.T) {
	k := testKeys()
	v := mustJWT(t, &fsm.JWTSpec{JWKS: jwks(t,
		rsaJWK(&k.rsaA.PublicKey, "a", "RS256"),
		rsaJWK(&k.rsaB.PublicKey, "b", ""), // no alg: any RSA algorithm
		ecJWK(&k.ec.PublicKey, "e"),
		map[string]string{"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}, // skipped
		map[string]string{"kty": "XYZ", "kid": "future"},                                      // skipped
	)})
	cases := []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		ok     bool
	}{
		{"kid a, key a", jwt.SigningMethodRS256, k.rsaA, "a", true},
		{"kid b, key b", jwt.SigningMethodRS256, k.rsaB, "b", true},
		{"kid b, key b, PS256 (JWK without alg)", jwt.SigningMethodPS256, k.rsaB, "b", true},
		{"kid a, PS256 (JWK bound to RS256)", jwt.SigningMethodPS256, k.rsaA, "a", false},
		{"kid a, key b", jwt.SigningMethodRS256, k.rsaB, "a", false},
		{"kid b, key a", jwt.SigningMethodRS256, k.rsaA, "b", false},
		{"no kid, key a", jwt.SigningMethodRS256, k.rsaA, "", true},
		{"no kid, key b", jwt.SigningMethodRS256, k.rsaB, "", true},
		{"kid e, EC key", jwt.SigningMethodES256, k.ec, "e", true},
		{"unknown kid", jwt.SigningMethodRS256, k.rsaA, "zzz", false},
		{"encryption key's kid", jwt.SigningMethodRS256, k.rsaA, "enc", false},
	}
	for _, c := range cases {
		_, err := v.Verify(bearer(sign(t, c.method, c.key, c.kid, good())), t0)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// Keys without kid answer for a token whose kid no key has, and are tried in turn.
func TestJWKSKeysWithoutKid(t *testing.T) {
	k := testKeys()
	secret := []byte("jwks-oct-secret-0123456789abcdef")
	v := mustJWT(t, &fsm.JWTSpec{JWKS: jwks(t,
		rsaJWK(&k.rsaA.PublicKey, "a", ""),
		rsaJWK(&k.rsaB.PublicKey, "", ""),
		map[string]string{"kty": "oct", "k": b64u(secret)},
	)})
	for _, c := range []struct {
		name   string
		method jwt.SigningMethod
		key    any
		kid    string
		ok     bool
	}{
		{"kidless key b under a foreign kid", jwt.SigningMethodRS256, k.rsaB, "rotated-1", true},
		{"kidless key b under kid a", jwt.SigningMethodRS256, k.rsaB, "a", true},
		{"key a under a foreign kid", jwt.SigningMethodRS256, k.rsaA, "rotated-1", false},
		{"oct key, HS384", jwt.SigningMethodHS384, secret, "", true},
		{"oct key, another secret", jwt.SigningMethodHS256, []byte("nope"), "", false},
	} {
		_, err := v.Verify(bearer(sign(t, c.method, c.key, c.kid, good())), t0)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestJWTClaimsToParams(t *testing.T) {
	k := testKeys()
	spec := &fsm.JWTSpec{
		Keys: []fsm.JWTKey{{Alg: "ES256", PEM: pemOf(t, &k.ec.PublicKey)}},
		Claims: []fsm.ClaimToParam{
			{Claim: "sub", In: fsm.InHeader, Name: "X-User"},
			{Claim: "uid", In: fsm.InQuery, Name: "userId"},
			{Claim: "admin", In: fsm.InHeader, Name: "X-Admin"},
			{Claim: "roles", In: fsm.InHeader, Name: "X-Roles"},
			{Claim: "missing", In: fsm.InQuery, Name: "m"},
			{Claim: "ratio", In: fsm.InForm, Name: "ratio"},
		},
	}
	v := mustJWT(t, spec)
	c := good()
	c["uid"] = json.Number("12345678901234567890") // beyond float64's exact integers
	c["admin"] = true
	c["roles"] = []string{"a", "b"}
	c["ratio"] = 0.25
	cl, err := v.Verify(bearer(sign(t, jwt.SigningMethodES256, k.ec, "", c)), t0)
	if err != nil {
		t.Fatal(err)
	}
	type kv struct{ in, name, value string }
	var got []kv
	cl.Each(func(p fsm.ClaimToParam, value string) { got = append(got, kv{p.In, p.Name, value}) })
	want := []kv{
		{"header", "X-User", "user-42"},
		{"query", "userId", "12345678901234567890"},
		{"header", "X-Admin", "true"},
		{"header", "X-Roles", `["a","b"]`},
		{"form", "ratio", "0.25"},
	}
	if len(got) != len(want) {
		t.Fatalf("Each gave %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("param %d = %v, want %v", i, got[i], want[i])
		}
	}
	if _, ok := cl.Get("missing"); ok {
		t.Error("Get(missing) reported a value")
	}
	if exp, ok := cl.Get("exp"); !ok || exp != "1772370000" {
		t.Errorf("Get(exp) = %q, %v", exp, ok)
	}
}

func TestCompileJWTErrors(t *testing.T) {
	k := testKeys()
	rsPEM := pemOf(t, &k.rsaA.PublicKey)
	// crypto/rsa will not generate a 512-bit key any more; an old PEM can still hold one.
	small := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 511), E: 65537}}
	small.N.Add(small.N, big.NewInt(1))
	cases := []struct {
		name string
		spec fsm.JWTSpec
		want string
	}{
		{"no keys", fsm.JWTSpec{}, "no keys"},
		{"bad from", fsm.JWTSpec{From: "body:x", Keys: []fsm.JWTKey{{Alg: "HS256", Secret: "s"}}}, "from"},
		{"HS without secret", fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "HS256"}}}, "secret"},
		{"none", fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "none", Secret: "s"}}}, "unsupported"},
		{"not PEM", fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "RS256", PEM: "hello"}}}, "PEM"},
		{"ES256 with an RSA key", fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "ES256", PEM: rsPEM}}}, "RSA key"},
		{"ES384 with a P-256 key", fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "ES384", PEM: pemOf(t, &k.ec.PublicKey)}}}, "P-256"},
		{"small RSA", fsm.JWTSpec{Keys: []fsm.JWTKey{{Alg: "RS256", PEM: pemOf(t, &small.PublicKey)}}}, "512-bit"},
		{"JWKS not JSON", fsm.JWTSpec{JWKS: "{"}, "jwks"},
		{"JWKS only enc keys", fsm.JWTSpec{JWKS: jwks(t, map[string]string{"kty": "oct", "use": "enc", "k": "AAAA"})}, "no signature verification key"},
		{"JWK alg not of its type", fsm.JWTSpec{JWKS: jwks(t, rsaJWK(&k.rsaA.PublicKey, "a", "ES256"))}, "does not fit"},
		{"JWK EC point off the curve", fsm.JWTSpec{JWKS: jwks(t, map[string]string{"kty": "EC", "crv": "P-256", "x": b64u([]byte{1}), "y": b64u([]byte{2})})}, "x, y"},
		{"JWK RSA without n", fsm.JWTSpec{JWKS: jwks(t, map[string]string{"kty": "RSA", "e": "AQAB"})}, "n: required"},
	}
	for _, c := range cases {
		_, err := CompileJWT(&c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.name, err, c.want)
		}
	}
}

func TestErrorsAreSentinels(t *testing.T) {
	all := []*Error{ErrMissingToken, ErrInvalidToken, ErrTokenExpired, ErrTokenNotYetValid,
		ErrTokenIssuer, ErrTokenAudience, ErrTokenReplayed, ErrNoReplayStore}
	seen := map[string]bool{}
	for _, e := range all {
		if e.Error() == "" || seen[e.Error()] {
			t.Errorf("message %q empty or repeated", e.Error())
		}
		seen[e.Error()] = true
		var target *Error
		if !errors.As(error(e), &target) || target != e {
			t.Errorf("%v does not unwrap to itself", e)
		}
	}
}

// Verify is called from many request goroutines on one verifier (run with -race).
func TestJWTConcurrent(t *testing.T) {
	k := testKeys()
	v := mustJWT(t, stdSpec(t))
	toks := []string{
		sign(t, jwt.SigningMethodRS256, k.rsaA, "rs", good()),
		sign(t, jwt.SigningMethodES256, k.ec, "", good()),
		sign(t, jwt.SigningMethodHS256, []byte(hsSecret), "hs", good()),
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 30 {
				if _, err := v.Verify(bearer(toks[(g+i)%len(toks)]), t0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
