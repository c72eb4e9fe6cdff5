package access

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

// DefaultLeeway is the clock skew CompileJWT allows between the token issuer and this
// node when checking exp and nbf. Without any, a token minted with nbf = now by an
// issuer whose clock runs a second ahead is refused on arrival.
const DefaultLeeway = 30 * time.Second

// maxTokenLen bounds the token the verifier will parse. Real tokens are well under
// this; a larger one is refused before any base64 or JSON work is done on it.
const maxTokenLen = 16 << 10

// ReplayStore remembers the token ids (jti) already used, for APIs whose tokens are
// single use. It has the shape of signature.NonceStore, so the node can hand the same
// store (one node's, or the cluster-wide one) to both checks; ids given here are
// prefixed so they never collide with a nonce.
type ReplayStore interface {
	// Use records id as used at now and reports true, or reports false when it was
	// already used. It must be safe for concurrent use and must not keep id.
	Use(id []byte, now time.Time) bool
}

// JWTVerifier checks the tokens of one API with auth: jwt, compiled from its JWTSpec.
//
// Set Leeway and Replays, if at all, before the first Verify; after that a
// JWTVerifier is read only and safe for concurrent use.
type JWTVerifier struct {
	// Leeway is the clock skew allowed on exp and nbf; CompileJWT sets DefaultLeeway.
	Leeway time.Duration
	// Replays records used jti values. It is required when the spec asks for single
	// use: without it every token is refused with ErrNoReplayStore.
	Replays ReplayStore

	where, name string // header|query|cookie, and the name there
	issuer      string
	audience    string
	singleUse   bool
	params      []fsm.ClaimToParam

	parser *jwt.Parser
	keyFn  jwt.Keyfunc // v.key, bound once: a method value made per call would allocate

	// Keys indexed for the keyfunc. Values are one key or a jwt.VerificationKeySet,
	// boxed once here so the lookup allocates nothing.
	byAlg      map[string]any    // alg → every key for it: tokens without kid
	byAlgKid   map[[2]string]any // (alg, kid) → keys with that kid, then keys without kid
	byAlgNoKid map[string]any    // alg → keys without kid: tokens whose kid no key has
}

// CompileJWT compiles spec: its keys (HS secrets, RS/PS/ES/EdDSA PEM public keys) and
// its JWKS (RSA, EC, oct and OKP Ed25519 keys; a JWK without "alg" verifies every
// algorithm of its type), where the token is read from ("header:NAME", default
// "header:Authorization", "query:NAME", "cookie:NAME"), and the claim checks. It fails
// when spec has no usable key or a key does not parse.
func CompileJWT(spec *fsm.JWTSpec) (*JWTVerifier, error) {
	if spec == nil {
		return nil, errors.New("jwt: no spec")
	}
	v := &JWTVerifier{
		Leeway:    DefaultLeeway,
		where:     "header",
		name:      fasthttp.HeaderAuthorization,
		issuer:    spec.Issuer,
		audience:  spec.Audience,
		singleUse: spec.SingleUse,
		params:    append([]fsm.ClaimToParam(nil), spec.Claims...),
	}
	if spec.From != "" {
		where, name, ok := strings.Cut(spec.From, ":")
		if !ok || name == "" || (where != "header" && where != "query" && where != "cookie") {
			return nil, fmt.Errorf("jwt: from %q: want header:NAME, query:NAME or cookie:NAME", spec.From)
		}
		v.where, v.name = where, name
	}

	var keys []verKey
	for i, k := range spec.Keys {
		vk, err := configKey(k)
		if err != nil {
			return nil, fmt.Errorf("jwt: keys[%d]: %w", i, err)
		}
		keys = append(keys, vk)
	}
	if spec.JWKS != "" {
		ks, err := parseJWKS(string(spec.JWKS))
		if err != nil {
			return nil, fmt.Errorf("jwt: %w", err)
		}
		keys = append(keys, ks...)
	}
	if len(keys) == 0 {
		return nil, errors.New("jwt: no keys")
	}
	v.index(keys)

	// Claims are checked here against the time the caller passes, not by the parser's
	// own clock, so the parser skips them; that also keeps the shared parser read only
	// (golang-jwt writes a default validator into the parser on first use otherwise).
	// JSON numbers stay json.Number so numeric claims reach the backend as sent.
	algs := make([]string, 0, len(v.byAlg))
	for alg := range v.byAlg {
		algs = append(algs, alg)
	}
	v.parser = jwt.NewParser(jwt.WithValidMethods(algs), jwt.WithJSONNumber(), jwt.WithoutClaimsValidation())
	v.keyFn = v.key
	return v, nil
}

// index builds the keyfunc's lookup tables from keys, in config order (keys, then the
// JWKS), which is the order keys are tried in.
func (v *JWTVerifier) index(keys []verKey) {
	all := map[string][]any{}
	noKid := map[string][]any{}
	withKid := map[[2]string][]any{}
	for _, k := range keys {
		for _, alg := range k.algs {
			all[alg] = append(all[alg], k.key)
			if k.kid == "" {
				noKid[alg] = append(noKid[alg], k.key)
			} else {
				withKid[[2]string{alg, k.kid}] = append(withKid[[2]string{alg, k.kid}], k.key)
			}
		}
	}
	v.byAlg = make(map[string]any, len(all))
	for alg, ks := range all {
		v.byAlg[alg] = keySet(ks)
	}
	v.byAlgNoKid = make(map[string]any, len(noKid))
	for alg, ks := range noKid {
		v.byAlgNoKid[alg] = keySet(ks)
	}
	v.byAlgKid = make(map[[2]string]any, len(withKid))
	for ak, ks := range withKid {
		v.byAlgKid[ak] = keySet(append(ks, noKid[ak[0]]...))
	}
}

// keySet is what the keyfunc returns for ks: the key itself, or a set golang-jwt tries
// in turn.
func keySet(ks []any) any {
	if len(ks) == 1 {
		return ks[0]
	}
	set := jwt.VerificationKeySet{Keys: make([]jwt.VerificationKey, len(ks))}
	for i, k := range ks {
		set.Keys[i] = k
	}
	return set
}

var (
	errUnknownKid = errors.New("no key for the token's kid")
	errCrit       = errors.New("token has critical header parameters")
)

// key is the jwt.Keyfunc. The parser has already refused algorithms no key is for, so
// token.Method is one of ours; keys are looked up by that algorithm, so a key is only
// ever used with an algorithm it was configured for.
func (v *JWTVerifier) key(t *jwt.Token) (any, error) {
	// RFC 7515, 4.1.11: a "crit" extension the recipient does not understand makes the
	// token invalid. We understand none.
	if _, ok := t.Header["crit"]; ok {
		return nil, errCrit
	}
	alg := t.Method.Alg()
	kidv, ok := t.Header["kid"]
	if !ok {
		if k, ok := v.byAlg[alg]; ok {
			return k, nil
		}
		return nil, errUnknownKid
	}
	kid, ok := kidv.(string)
	if !ok {
		return nil, errUnknownKid
	}
	if k, ok := v.byAlgKid[[2]string{alg, kid}]; ok {
		return k, nil
	}
	// Keys without a kid answer for any kid, as in Alibaba's jwtAuth.
	if k, ok := v.byAlgNoKid[alg]; ok {
		return k, nil
	}
	return nil, errUnknownKid
}

// Token returns the token req carries where the API reads it, or nil. From a header,
// a "Bearer " prefix (any case) is removed. The slice is the request's: do not keep it
// past the request.
func (v *JWTVerifier) Token(req *fasthttp.Request) []byte {
	var b []byte
	switch v.where {
	case "header":
		b = bytes.TrimSpace(req.Header.Peek(v.name))
		// "Bearer" alone is a scheme without a token: missing, not invalid.
		if len(b) >= 6 && strings.EqualFold(string(b[:6]), "bearer") && (len(b) == 6 || b[6] == ' ' || b[6] == '\t') {
			b = bytes.TrimSpace(b[6:])
		}
	case "query":
		b = req.URI().QueryArgs().Peek(v.name)
	case "cookie":
		b = req.Header.Cookie(v.name)
	}
	return b
}

// Verify checks the token of req at time now: its signature against the API's keys
// (the algorithm must be one a configured key is for; "none" never is), then exp and
// nbf within Leeway, iss and aud when the spec names them, and last, when the spec asks
// for single use, that its jti was not used before. On success it returns the token's
// claims; on failure one of the package's sentinel errors, as is.
//
// Signature work allocates (golang-jwt decodes the token into maps); Verify adds little
// to that. It is safe for concurrent use.
func (v *JWTVerifier) Verify(req *fasthttp.Request, now time.Time) (*Claims, error) {
	raw := v.Token(req)
	if len(raw) == 0 {
		return nil, ErrMissingToken
	}
	if len(raw) > maxTokenLen {
		return nil, ErrInvalidToken
	}
	mc := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(string(raw), mc, v.keyFn); err != nil {
		// Malformed, wrong algorithm, unknown kid, bad signature: the client learns only
		// that the token is not one of ours, never which step failed.
		return nil, ErrInvalidToken
	}
	if err := v.checkClaims(mc, now); err != nil {
		return nil, err
	}
	c := &Claims{all: mc}
	for _, p := range v.params {
		if s, ok := claimString(mc[p.Claim]); ok {
			c.pairs = append(c.pairs, claimPair{p, s})
		}
	}
	return c, nil
}

// checkClaims checks the registered claims of a token whose signature is good.
func (v *JWTVerifier) checkClaims(mc jwt.MapClaims, now time.Time) error {
	// A claim present with the wrong type (exp: "tomorrow") is an invalid token, not a
	// token without that claim.
	exp, err := mc.GetExpirationTime()
	if err != nil {
		return ErrInvalidToken
	}
	if exp != nil && !now.Before(exp.Add(v.Leeway)) {
		return ErrTokenExpired
	}
	nbf, err := mc.GetNotBefore()
	if err != nil {
		return ErrInvalidToken
	}
	if nbf != nil && now.Add(v.Leeway).Before(nbf.Time) {
		return ErrTokenNotYetValid
	}
	iss, err := mc.GetIssuer()
	if err != nil {
		return ErrInvalidToken
	}
	if v.issuer != "" && iss != v.issuer {
		return ErrTokenIssuer
	}
	if v.audience != "" {
		aud, err := mc.GetAudience()
		if err != nil {
			return ErrInvalidToken
		}
		if !contains(aud, v.audience) {
			return ErrTokenAudience
		}
	}
	if !v.singleUse {
		return nil
	}
	// Single use needs an id to remember, and an expiry: a token that never expires
	// would have to be remembered forever, and no store does that.
	jti, ok := mc["jti"].(string)
	if !ok || jti == "" || exp == nil {
		return ErrInvalidToken
	}
	if v.Replays == nil {
		return ErrNoReplayStore
	}
	// "jwt\x00" keeps ids apart from X-Ca-Nonce values in a shared store; the issuer
	// keeps two issuers' jti spaces apart, since each only promises uniqueness within
	// its own.
	id := make([]byte, 0, 5+len(iss)+len(jti))
	id = append(id, "jwt\x00"...)
	id = append(id, iss...)
	id = append(id, 0)
	id = append(id, jti...)
	if !v.Replays.Use(id, now) {
		return ErrTokenReplayed
	}
	return nil
}

// claimString renders a claim value for a backend parameter: strings as they are,
// numbers as written in the token, booleans as true/false, arrays and objects as
// compact JSON. A missing or null claim is not passed.
func claimString(x any) (string, bool) {
	switch t := x.(type) {
	case nil:
		return "", false
	case string:
		return t, true
	case json.Number:
		return string(t), true
	case bool:
		return strconv.FormatBool(t), true
	}
	b, err := json.Marshal(x)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// Claims are the claims of a verified token.
type Claims struct {
	all   jwt.MapClaims
	pairs []claimPair
}

type claimPair struct {
	param fsm.ClaimToParam
	value string
}

// Each calls fn for each claim the API passes to its backend (JWTSpec.Claims) that the
// token holds, in spec order, with its value rendered as claimString describes. The
// proxy puts value at param.In / param.Name. Values come from a token signed by a
// trusted issuer but are otherwise arbitrary text: the writer must encode them for
// where they go.
func (c *Claims) Each(fn func(param fsm.ClaimToParam, value string)) {
	for _, p := range c.pairs {
		fn(p.param, p.value)
	}
}

// Get returns claim name rendered as for Each, and whether the token holds it. It
// reads any claim, not only those the spec passes on, for callers such as the access
// log (jwtClaims) or a per-user quota keyed on sub.
func (c *Claims) Get(name string) (string, bool) {
	return claimString(c.all[name])
}
