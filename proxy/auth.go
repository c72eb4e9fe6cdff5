package proxy

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/tollgate/tollgate/access"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

var (
	hdrAuthorization = []byte(fasthttp.HeaderAuthorization)
	argAppCode       = []byte("AppCode")
	hdrCaKey         = []byte(signature.HeaderKey)
	appCodeScheme    = []byte("APPCODE ")
)

// authMode returns the API's auth mode, normalized.
func authMode(def *fsm.APIDef) string {
	return strings.ToLower(strings.TrimSpace(def.Auth))
}

// appAuth reports whether the API authenticates apps (and so checks grants).
func appAuth(def *fsm.APIDef) bool {
	m := authMode(def)
	return m == fsm.AuthApp || m == fsm.AuthAppCode
}

// buildGuard compiles the IP access control of an API that names an IP policy. The
// policy itself is read from the request's table, so a changed policy applies on the
// next request. A policy with per-app lists needs the app: for app and appcode APIs
// the grant stage checks it once auth has found the app; for others it is checked
// here with no app.
func buildGuard(b *builder, _ *Route, def *fsm.APIDef) (Step, error) {
	name := def.IPPolicy
	if name == "" {
		return nil, nil
	}
	if _, ok := b.state.IPPolicies[name]; !ok {
		return nil, fmt.Errorf("ip policy %q does not exist", name)
	}
	deferToApp := appAuth(def)
	return func(c *Call) bool {
		rules := c.table.ipPolicies[name]
		if rules == nil {
			return c.FailDetail(ErrInternal, "ip policy missing")
		}
		if deferToApp && rules.NeedsApp() {
			return true
		}
		if !rules.Allowed(c.ClientIP(), "") {
			return c.Fail(ErrIPDenied)
		}
		return true
	}, nil
}

// buildAuth compiles the API's auth mode: anonymous (no step), app signatures,
// AppCode or JWT. Any other mode refuses every call: an API that asks for auth must
// never be served without it.
func buildAuth(b *builder, _ *Route, def *fsm.APIDef) (Step, error) {
	switch mode := authMode(def); mode {
	case fsm.AuthAnonymous:
		return nil, nil
	case fsm.AuthApp:
		return b.p.authApp, nil
	case fsm.AuthAppCode:
		return authAppCode, nil
	case fsm.AuthJWT:
		return b.p.buildJWT(def)
	default:
		if mode == "" {
			mode = "(none given)"
		}
		return failStep(ErrAuthUnsupported, mode), nil
	}
}

// authApp checks an Alibaba-style app signature: the app by X-Ca-Key, then the
// signature over the request with the app's live secrets, timestamp, Content-MD5 and
// nonce. It allocates nothing once the Call's buffers have grown.
func (p *Proxy) authApp(c *Call) bool {
	req := &c.Ctx.Request
	a := c.table.apps[string(req.Header.PeekBytes(hdrCaKey))]
	if a == nil || a.disabled {
		return c.Fail(ErrInvalidAppKey)
	}
	err := p.verifier.Verify(req, a.secrets, c.Start, &c.sig)
	if err == nil {
		c.app = a
		return true
	}
	switch err {
	case signature.ErrInvalidSignature:
		c.msg = signature.AppendInvalidSignatureMessage(c.msg[:0], c.sig.StringToSign())
		return c.FailMessage(ErrInvalidSignature, c.msg)
	case signature.ErrInvalidSignatureMethod:
		return c.Fail(ErrInvalidSignatureMethod)
	case signature.ErrInvalidTimestamp:
		return c.Fail(ErrInvalidTimestamp)
	case signature.ErrTimestampExpired:
		return c.Fail(ErrTimestampExpired)
	case signature.ErrInvalidContentMD5:
		return c.Fail(ErrInvalidMD5)
	case signature.ErrInvalidNonce:
		return c.Fail(ErrInvalidNonce)
	case signature.ErrNonceUsed:
		return c.Fail(ErrNonceUsed)
	case signature.ErrSignedBeforeRestart:
		return c.Fail(ErrSignedBeforeRestart)
	}
	return c.Fail(ErrInternal)
}

// authAppCode finds the app by `Authorization: APPCODE <code>`, else by the AppCode
// query parameter. The credential is the gateway's: it is removed before forwarding.
func authAppCode(c *Call) bool {
	req := &c.Ctx.Request
	var code []byte
	fromHeader := false
	if v := req.Header.PeekBytes(hdrAuthorization); len(v) > len(appCodeScheme) &&
		bytes.EqualFold(v[:len(appCodeScheme)], appCodeScheme) {
		code, fromHeader = bytes.TrimSpace(v[len(appCodeScheme):]), true
	} else {
		code = req.URI().QueryArgs().PeekBytes(argAppCode)
	}
	a := c.table.codes[string(code)]
	if len(code) == 0 || a == nil || a.disabled {
		return c.Fail(ErrInvalidAppCode)
	}
	c.app = a
	if fromHeader {
		req.Header.DelBytes(hdrAuthorization)
	}
	if req.URI().QueryArgs().HasBytes(argAppCode) {
		req.URI().QueryArgs().DelBytes(argAppCode)
	}
	return true
}

// buildJWT compiles auth: jwt. Single-use tokens share the node's nonce store (the
// access package prefixes their ids).
func (p *Proxy) buildJWT(def *fsm.APIDef) (Step, error) {
	if def.JWT == nil {
		return nil, fmt.Errorf("auth jwt needs a jwt section")
	}
	v, err := access.CompileJWT(def.JWT)
	if err != nil {
		return nil, err
	}
	v.Replays = p.verifier.Nonces
	return func(c *Call) bool {
		claims, err := v.Verify(&c.Ctx.Request, c.Start)
		if err != nil {
			if err == access.ErrNoReplayStore {
				return c.FailDetail(ErrInternal, "jwt replay store")
			}
			return c.FailDetail(ErrInvalidToken, err.Error())
		}
		c.claims = claims
		return true
	}, nil
}

// buildGrant compiles the grant check of app and appcode APIs: the app must hold a
// grant of this API covering this stage and not expired. Grants are read from the
// request's table (a map read, no lock, no allocation). It also runs an IP policy
// with per-app lists, deferred here from guard.
func buildGrant(_ *builder, r *Route, def *fsm.APIDef) (Step, error) {
	if !appAuth(def) {
		return nil, nil
	}
	ref := r.ref
	policy := def.IPPolicy
	return func(c *Call) bool {
		g, ok := c.app.grants[ref]
		if !ok {
			return c.Fail(ErrUnauthorized)
		}
		inStage, live := g.covers(c.si, c.Start.UnixNano())
		if !inStage {
			return c.FailDetail(ErrUnauthorized, string(fsm.Stages[c.si]))
		}
		if !live {
			return c.Fail(ErrGrantExpired)
		}
		if policy != "" {
			if rules := c.table.ipPolicies[policy]; rules.NeedsApp() && !rules.Allowed(c.ClientIP(), c.app.name) {
				return c.Fail(ErrIPDenied)
			}
		}
		return true
	}, nil
}

// buildClaims compiles the convert step that passes chosen JWT claims to the backend,
// after verification so that undeclared-parameter dropping does not remove them.
func buildClaims(_ *builder, _ *Route, def *fsm.APIDef) (Step, error) {
	if authMode(def) != fsm.AuthJWT || def.JWT == nil || len(def.JWT.Claims) == 0 {
		return nil, nil
	}
	for _, cl := range def.JWT.Claims {
		if cl.In != fsm.InHeader && cl.In != fsm.InQuery {
			return nil, fmt.Errorf("jwt claim %q: in %q: want header or query", cl.Claim, cl.In)
		}
	}
	return func(c *Call) bool {
		if c.claims == nil {
			return true
		}
		req := &c.Ctx.Request
		c.claims.Each(func(cp fsm.ClaimToParam, value string) {
			name := cp.Name
			if name == "" {
				name = cp.Claim
			}
			switch cp.In {
			case fsm.InHeader:
				req.Header.Set(name, value)
			case fsm.InQuery:
				req.URI().QueryArgs().Set(name, value)
			}
		})
		return true
	}, nil
}
