package fsm

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// testPEM holds a self-signed certificate with its key, and an EC and an Ed25519
// public key, made once for the whole test binary.
var testPEM = sync.OnceValue(func() (r struct{ cert, key, ecPub, edPub string }) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "api.example.com"},
		DNSNames:     []string{"api.example.com"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Unix(1<<33, 0),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		panic(err)
	}
	kder, _ := x509.MarshalECPrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	eder, _ := x509.MarshalPKIXPublicKey(ed)
	r.cert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	r.key = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	r.ecPub = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}))
	r.edPub = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: eder}))
	return r
})

// validBundle is DESIGN.md's example file plus one of everything else; each test case
// breaks one thing in a fresh copy.
func validBundle() *Bundle {
	return &Bundle{
		Groups: []GroupSpec{{
			Name:    "weather",
			Domains: []string{"api.example.com"},
			APIs: []APISpec{{
				Name: "city",
				APIDef: APIDef{
					Method: "GET", Path: "/cities/[city]", Auth: AuthApp,
					Params: []Param{
						{Name: "city", In: InPath, Type: "string", Required: true, Regex: "^[a-z]+$"},
						{Name: "days", In: InQuery, Type: "int", Min: ptr(1.0), Max: ptr(14.0), Default: ptr("3")},
						{Name: "unit", In: InQuery, Type: "string", Enum: []string{"c", "f"}},
					},
					Backend: Backend{
						Type: BackendHTTP, URL: "http://127.0.0.1:9001", Path: "/v2/weather/[city]",
						Timeout:   Duration(3 * time.Second),
						Map:       []ParamMapping{{Param: "days", In: InHeader, Name: "X-Days"}},
						Constants: []ConstantParam{{Name: "X-Source", In: InHeader, Value: "tollgate"}},
						System:    []SystemParam{{Param: "CaClientIp", In: InHeader, Name: "X-Client-Ip"}},
						Signature: "backend-key-1",
					},
					Traffic:  "basic",
					IPPolicy: "office",
				},
				Deploy: []Stage{StageTest, StageRelease},
			}, {
				Name: "order",
				APIDef: APIDef{
					Method: "POST", Path: "/orders", Auth: AuthApp,
					Body:    &BodySpec{Schema: `{"type":"object","required":["qty"],"properties":{"qty":{"type":"integer","minimum":1}}}`},
					Backend: Backend{Type: BackendHTTP, URL: "http://127.0.0.1:9001", Path: "/orders", Timeout: Duration(3 * time.Second)},
				},
				Deploy: []Stage{StageRelease},
			}, {
				Name: "ping",
				APIDef: APIDef{
					Method: "ANY", Path: "/ping", Auth: AuthJWT,
					JWT:     &JWTSpec{From: "header:Authorization", Keys: []JWTKey{{Alg: "HS256", Secret: "s3cret"}, {Alg: "ES256", Kid: "k2", PEM: testPEM().ecPub}}},
					Backend: Backend{Type: BackendMock, Status: 200, Body: `{"ok":true}`, Headers: map[string]string{"Content-Type": "application/json"}},
				},
			}},
		}},
		Apps:   []AppSpec{{Name: "mobile", Owner: "alice"}, {Name: "web", Key: "webkey", Secret: "0123456789abcdef"}},
		Grants: []GrantSpec{{App: "mobile", API: "weather/city", Stages: []Stage{StageRelease}}},
		Traffic: []TrafficSpec{{
			Name: "basic", Window: WindowMinute, API: 1000, App: 100, User: 500,
			Special: []TrafficSpecial{{App: "mobile", Limit: 500}, {User: "bob", Limit: 5}},
		}},
		IPPolicies:   []IPPolicy{{Name: "office", Allow: []string{"10.0.0.0/8", "2001:db8::/32", "192.0.2.1"}, Apps: []IPAppPolicy{{App: "web", Allow: []string{"::1"}}}}},
		BackendKeys:  []BackendKey{{Name: "backend-key-1", Key: "DemoKey1", Secret: "DemoSecret1"}},
		Certificates: []Certificate{{Name: "example", Cert: testPEM().cert, Key: testPEM().key, Domains: []string{"api.example.com", "*.example.com"}}},
	}
}

func TestValidateValidBundle(t *testing.T) {
	if err := validBundle().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (&Bundle{}).Validate(); err != nil {
		t.Fatalf("empty bundle: %v", err)
	}
}

func TestValidateRules(t *testing.T) {
	city := func(b *Bundle) *APISpec { return &b.Groups[0].APIs[0] }
	order := func(b *Bundle) *APISpec { return &b.Groups[0].APIs[1] }
	ping := func(b *Bundle) *APISpec { return &b.Groups[0].APIs[2] }
	const c = "groups[0].apis[0]"
	const o = "groups[0].apis[1]"
	const pg = "groups[0].apis[2]"

	tests := []struct {
		name   string
		mutate func(b *Bundle)
		paths  []string // every path reported, in order; nil means valid
		msg    string   // a substring of the first message
	}{
		// groups
		{"group name missing", func(b *Bundle) { b.Groups[0].Name = "" }, []string{"groups[0].name", "grants[0].api"}, "required"},
		{"group name upper case", func(b *Bundle) { b.Groups[0].Name = "Weather"; b.Grants = nil }, []string{"groups[0].name"}, "DNS label"},
		{"group name trailing dash", func(b *Bundle) { b.Groups[0].Name = "w-"; b.Grants = nil }, []string{"groups[0].name"}, "DNS label"},
		{"group name duplicate", func(b *Bundle) { b.Groups = append(b.Groups, GroupSpec{Name: "weather"}) }, []string{"groups[1].name"}, "duplicate"},
		{"second group ok", func(b *Bundle) {
			b.Groups = append(b.Groups, GroupSpec{Name: "shop-2", Domains: []string{"shop.example.com"}})
		}, nil, ""},
		{"domain invalid", func(b *Bundle) { b.Groups[0].Domains = []string{"api.example.com:8080"} }, []string{"groups[0].domains[0]"}, "not a valid hostname"},
		{"domain upper case", func(b *Bundle) { b.Groups[0].Domains = []string{"API.example.com"} }, []string{"groups[0].domains[0]"}, "lower-case"},
		{"domain trailing dot", func(b *Bundle) { b.Groups[0].Domains = []string{"api.example.com."} }, []string{"groups[0].domains[0]"}, "hostname"},
		{"domain duplicate across groups", func(b *Bundle) {
			b.Groups = append(b.Groups, GroupSpec{Name: "shop", Domains: []string{"x.example.com", "api.example.com"}})
		}, []string{"groups[1].domains[1]"}, "groups[0].domains[0]"},

		// API names and methods
		{"api name missing", func(b *Bundle) { order(b).Name = "" }, []string{o + ".name"}, "required"},
		{"api name duplicate", func(b *Bundle) { order(b).Name = "city" }, []string{o + ".name"}, "duplicate API name"},
		{"api name with slash", func(b *Bundle) { order(b).Name = "a/b" }, []string{o + ".name"}, "API name"},
		{"method missing", func(b *Bundle) { order(b).Method = "" }, []string{o + ".method"}, "required"},
		{"method lower case", func(b *Bundle) { order(b).Method = "post" }, []string{o + ".method"}, "upper case: POST"},
		{"method unknown", func(b *Bundle) { order(b).Method = "FETCH" }, []string{o + ".method"}, "unknown method"},

		// paths
		{"path missing", func(b *Bundle) { order(b).Path = "" }, []string{o + ".path"}, "required"},
		{"path relative", func(b *Bundle) { order(b).Path = "orders" }, []string{o + ".path"}, "start with '/'"},
		{"path with query", func(b *Bundle) { order(b).Path = "/orders?x=1" }, []string{o + ".path"}, "'?'"},
		{"path empty segment", func(b *Bundle) { order(b).Path = "/a//b" }, []string{o + ".path"}, "empty segment"},
		{"path trailing slash ok", func(b *Bundle) { order(b).Path = "/orders/" }, nil, ""},
		{"path param not whole segment", func(b *Bundle) { order(b).Path = "/orders/id-[id]" }, []string{o + ".path"}, "whole segment"},
		{"path param unclosed", func(b *Bundle) { order(b).Path = "/orders/[id" }, []string{o + ".path"}, "whole segment"},
		{"path param bad name", func(b *Bundle) { order(b).Path = "/orders/[1d]" }, []string{o + ".path"}, "letters, digits"},
		{"path param twice", func(b *Bundle) { order(b).Path = "/o/[id]/x/[id]" }, []string{o + ".path"}, "appears twice"},
		{"route conflict same shape", func(b *Bundle) {
			order(b).Method = "GET"
			order(b).Body = nil
			order(b).Path = "/cities/[town]"
		}, []string{o + ".path"}, `conflicts with API "city" (groups[0].apis[0])`},
		{"route conflict trailing slash", func(b *Bundle) { ping(b).Method = "POST"; ping(b).Path = "/orders/" }, []string{pg + ".path"}, "conflicts"},
		{"same path other method ok", func(b *Bundle) { order(b).Path = "/cities/[town]" }, nil, ""},
		{"same path ANY and GET ok", func(b *Bundle) { ping(b).Path = "/cities/[x]" }, nil, ""},
		{"static beside param ok", func(b *Bundle) { ping(b).Method = "GET"; ping(b).Path = "/cities/paris" }, nil, ""},

		// auth and JWT
		{"auth missing", func(b *Bundle) { order(b).Auth = "" }, []string{o + ".auth"}, "required"},
		{"auth unknown", func(b *Bundle) { order(b).Auth = "basic" }, []string{o + ".auth"}, "unknown auth"},
		{"jwt block missing", func(b *Bundle) { ping(b).JWT = nil }, []string{pg + ".jwt"}, "required with auth: jwt"},
		{"jwt without keys", func(b *Bundle) { ping(b).JWT.Keys = nil }, []string{pg + ".jwt.keys"}, "keys or jwks"},
		{"jwt with jwks ok", func(b *Bundle) {
			ping(b).JWT.Keys = nil
			ping(b).JWT.JWKS = `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`
		}, nil, ""},
		{"jwt jwks malformed", func(b *Bundle) { ping(b).JWT.Keys = nil; ping(b).JWT.JWKS = `{"k":1}` }, []string{pg + ".jwt.jwks"}, "JWK set"},
		{"jwt on non-jwt api", func(b *Bundle) { order(b).JWT = &JWTSpec{} }, []string{o + ".jwt"}, "only with auth: jwt"},
		{"jwt alg unknown", func(b *Bundle) { ping(b).JWT.Keys[0].Alg = "none" }, []string{pg + ".jwt.keys[0].alg"}, "unknown algorithm"},
		{"jwt hs without secret", func(b *Bundle) { ping(b).JWT.Keys[0].Secret = "" }, []string{pg + ".jwt.keys[0].secret"}, "required"},
		{"jwt es with wrong key", func(b *Bundle) { ping(b).JWT.Keys[1].PEM = testPEM().edPub }, []string{pg + ".jwt.keys[1].pem"}, "does not fit ES256"},
		{"jwt eddsa ok", func(b *Bundle) { ping(b).JWT.Keys[1] = JWTKey{Alg: "EdDSA", PEM: testPEM().edPub} }, nil, ""},
		{"jwt pem garbage", func(b *Bundle) { ping(b).JWT.Keys[1].PEM = "nope" }, []string{pg + ".jwt.keys[1].pem"}, "not PEM"},
		{"jwt from bad", func(b *Bundle) { ping(b).JWT.From = "body:x" }, []string{pg + ".jwt.from"}, "header:NAME"},
		{"jwt claim target", func(b *Bundle) { ping(b).JWT.Claims = []ClaimToParam{{Claim: "sub", In: "cookie", Name: "x"}} }, []string{pg + ".jwt.claims[0].in"}, "unknown location"},

		// params
		{"param name missing", func(b *Bundle) { city(b).Params[2].Name = "" }, []string{c + ".params[2].name"}, "required"},
		{"param name duplicate", func(b *Bundle) { city(b).Params[2].Name = "days" }, []string{c + ".params[2].name"}, "duplicate parameter"},
		{"param in missing", func(b *Bundle) { city(b).Params[2].In = "" }, []string{c + ".params[2].in"}, "required"},
		{"param in unknown", func(b *Bundle) { city(b).Params[2].In = "body" }, []string{c + ".params[2].in"}, "unknown location"},
		{"param header name", func(b *Bundle) { city(b).Params[2].In = InHeader; city(b).Params[2].Name = "bad name" }, []string{c + ".params[2].name"}, "header name"},
		{"param type unknown", func(b *Bundle) { city(b).Params[2].Type = "integer" }, []string{c + ".params[2].type"}, "unknown type"},
		{"param type default string", func(b *Bundle) { city(b).Params[2].Type = "" }, nil, ""},
		{"array needs items", func(b *Bundle) { city(b).Params[2].Type = "array" }, []string{c + ".params[2].items"}, "required for an array"},
		{"array items scalar", func(b *Bundle) { city(b).Params[2].Type = "array"; city(b).Params[2].Items = "array" }, []string{c + ".params[2].items"}, "unknown element type"},
		{"array ok", func(b *Bundle) { city(b).Params[2].Type = "array"; city(b).Params[2].Items = "string" }, nil, ""},
		{"items without array", func(b *Bundle) { city(b).Params[2].Items = "int" }, []string{c + ".params[2].items"}, "only for type: array"},
		{"min greater than max", func(b *Bundle) { city(b).Params[1].Min = ptr(20.0); city(b).Params[1].Default = nil }, []string{c + ".params[1].min"}, "greater than max"},
		{"min on string", func(b *Bundle) { city(b).Params[2].Min = ptr(1.0) }, []string{c + ".params[2].min"}, "numeric"},
		{"minLength greater than maxLength", func(b *Bundle) { city(b).Params[2].MinLength = ptr(3); city(b).Params[2].MaxLength = ptr(2) }, []string{c + ".params[2].minLength"}, "greater than maxLength"},
		{"maxLength negative", func(b *Bundle) { city(b).Params[2].MaxLength = ptr(-1) }, []string{c + ".params[2].maxLength"}, "negative"},
		{"minLength on int", func(b *Bundle) { city(b).Params[1].MinLength = ptr(1) }, []string{c + ".params[1].minLength"}, "apply to strings"},
		{"regex does not compile", func(b *Bundle) { city(b).Params[0].Regex = "^[a-z" }, []string{c + ".params[0].regex"}, "does not compile"},
		{"enum value wrong type", func(b *Bundle) { city(b).Params[1].Enum = []string{"1", "x"}; city(b).Params[1].Default = ptr("1") }, []string{c + ".params[1].enum[1]"}, `"x" is not a valid int`},
		{"enum boolean", func(b *Bundle) { city(b).Params[2].Type = "boolean"; city(b).Params[2].Enum = []string{"yes"} }, []string{c + ".params[2].enum[0]"}, "not a boolean"},
		{"int out of 32 bits", func(b *Bundle) { city(b).Params[1].Default = ptr("3000000000"); city(b).Params[1].Max = nil }, []string{c + ".params[1].default"}, "not a valid int"},
		{"long takes 64 bits", func(b *Bundle) {
			city(b).Params[1].Type = "long"
			city(b).Params[1].Default = ptr("3000000000")
			city(b).Params[1].Max = nil
		}, nil, ""},
		{"default wrong type", func(b *Bundle) { city(b).Params[1].Default = ptr("three") }, []string{c + ".params[1].default"}, "not a valid int"},
		{"default out of range", func(b *Bundle) { city(b).Params[1].Default = ptr("15") }, []string{c + ".params[1].default"}, "outside min..max"},
		{"default not in enum", func(b *Bundle) { city(b).Params[2].Default = ptr("k") }, []string{c + ".params[2].default"}, "not one of enum"},
		{"default fails regex", func(b *Bundle) { city(b).Params[0].Default = ptr("Paris") }, []string{c + ".params[0].default"}, "does not match regex"},
		{"path param not in path", func(b *Bundle) { city(b).Params[2].In = InPath }, []string{c + ".params[2].name"}, "does not appear in path"},
		{"path segment not declared", func(b *Bundle) { city(b).Params[0].In = InQuery }, []string{c + ".path"}, "[city] is not declared"},
		{"path segment undeclared ok without params", func(b *Bundle) {
			city(b).Params = nil
			city(b).Backend.Map = nil
		}, nil, ""},
		{"path param array", func(b *Bundle) { city(b).Params[0].Type = "array"; city(b).Params[0].Items = "string" }, []string{c + ".params[0].type"}, "cannot be an array"},
		{"form on GET", func(b *Bundle) { city(b).Params[2].In = InForm }, []string{c + ".params[2].in"}, "method with a body"},
		{"form on POST ok", func(b *Bundle) {
			order(b).Body = nil
			order(b).Params = []Param{{Name: "qty", In: InForm, Type: "int"}}
		}, nil, ""},

		// body
		{"body schema does not compile", func(b *Bundle) { order(b).Body.Schema = `{"type":"objekt"}` }, []string{o + ".body.schema"}, "invalid JSON Schema"},
		{"body schema external ref", func(b *Bundle) { order(b).Body.Schema = `{"$ref":"https://example.com/s.json"}` }, []string{o + ".body.schema"}, "invalid JSON Schema"},
		{"body schema missing", func(b *Bundle) { order(b).Body.Schema = "" }, []string{o + ".body.schema"}, "required"},
		{"body on GET", func(b *Bundle) { city(b).Body = &BodySpec{Schema: `{"type":"object"}`} }, []string{c + ".body"}, "method with a body"},
		{"body and form", func(b *Bundle) { order(b).Params = []Param{{Name: "qty", In: InForm}} }, []string{o + ".body"}, "exclude each other"},

		// backend
		{"backend type missing", func(b *Bundle) { order(b).Backend.Type = "" }, []string{o + ".backend.type"}, "required"},
		{"backend type unknown", func(b *Bundle) { order(b).Backend.Type = "fc" }, []string{o + ".backend.type"}, "unknown backend type"},
		{"backend url missing", func(b *Bundle) { order(b).Backend.URL = "" }, []string{o + ".backend.url"}, "required"},
		{"backend url relative", func(b *Bundle) { order(b).Backend.URL = "/x" }, []string{o + ".backend.url"}, "absolute"},
		{"backend url scheme", func(b *Bundle) { order(b).Backend.URL = "ftp://h" }, []string{o + ".backend.url"}, "absolute"},
		{"backend url no host", func(b *Bundle) { order(b).Backend.URL = "http://:80" }, []string{o + ".backend.url"}, "no host"},
		{"backend url https ok", func(b *Bundle) { order(b).Backend.URL = "https://[::1]:8443/base" }, nil, ""},
		{"backend path relative", func(b *Bundle) { order(b).Backend.Path = "orders" }, []string{o + ".backend.path"}, "start with '/'"},
		{"backend path unknown param", func(b *Bundle) { city(b).Backend.Path = "/v2/[town]" }, []string{c + ".backend.path"}, "[town]"},
		{"backend path from mapping ok", func(b *Bundle) {
			city(b).Backend.Path = "/v2/[city]/[d]"
			city(b).Backend.Map[0] = ParamMapping{Param: "days", In: InPath, Name: "d"}
		}, nil, ""},
		{"mapping to missing backend segment", func(b *Bundle) { city(b).Backend.Map[0].In = InPath }, []string{c + ".backend.map[0].name"}, "no [X-Days] segment"},
		{"backend method", func(b *Bundle) { order(b).Backend.Method = "ANY" }, []string{o + ".backend.method"}, "unknown backend method"},
		{"timeout negative", func(b *Bundle) { order(b).Backend.Timeout = Duration(-time.Second) }, []string{o + ".backend.timeout"}, "out of range"},
		{"timeout too long", func(b *Bundle) { order(b).Backend.Timeout = Duration(11 * time.Minute) }, []string{o + ".backend.timeout"}, "out of range"},
		{"timeout ten minutes ok", func(b *Bundle) { order(b).Backend.Timeout = Duration(10 * time.Minute) }, nil, ""},
		{"ca not pem", func(b *Bundle) { order(b).Backend.CA = "x" }, []string{o + ".backend.ca"}, "no PEM"},
		{"map param undeclared", func(b *Bundle) { city(b).Backend.Map[0].Param = "dayz" }, []string{c + ".backend.map[0].param"}, "not a declared parameter"},
		{"map in unknown", func(b *Bundle) { city(b).Backend.Map[0].In = "cookie" }, []string{c + ".backend.map[0].in"}, "unknown location"},
		{"map name missing", func(b *Bundle) { city(b).Backend.Map[0].Name = "" }, []string{c + ".backend.map[0].name"}, "required"},
		{"constant name missing", func(b *Bundle) { city(b).Backend.Constants[0].Name = "" }, []string{c + ".backend.constants[0].name"}, "required"},
		{"constant in missing", func(b *Bundle) { city(b).Backend.Constants[0].In = "" }, []string{c + ".backend.constants[0].in"}, "required"},
		{"system param unknown", func(b *Bundle) { city(b).Backend.System[0].Param = "CaClientIP" }, []string{c + ".backend.system[0].param"}, "unknown system parameter"},
		{"system in unknown", func(b *Bundle) { city(b).Backend.System[0].In = "x" }, []string{c + ".backend.system[0].in"}, "unknown location"},
		{"signature key missing", func(b *Bundle) { city(b).Backend.Signature = "key-2" }, []string{c + ".backend.signature"}, "not defined in backendKeys"},
		{"http with mock status", func(b *Bundle) { order(b).Backend.Status = 200 }, []string{o + ".backend.status"}, "only for a mock"},
		{"mock status", func(b *Bundle) { ping(b).Backend.Status = 600 }, []string{pg + ".backend.status"}, "100..599"},
		{"mock status unset ok", func(b *Bundle) { ping(b).Backend.Status = 0 }, nil, ""},
		{"mock body too large", func(b *Bundle) { ping(b).Backend.Body = strings.Repeat("x", MaxMockBody+1) }, []string{pg + ".backend.body"}, "mock limit"},
		{"mock header name", func(b *Bundle) { ping(b).Backend.Headers["X Bad"] = "1" }, []string{pg + ".backend.headers.X Bad"}, "header name"},
		{"mock with url", func(b *Bundle) { ping(b).Backend.URL = "http://x" }, []string{pg + ".backend.url"}, "only for an http"},

		// references from APIs
		{"traffic policy missing", func(b *Bundle) { city(b).Traffic = "gold" }, []string{c + ".traffic"}, `"gold" is not defined in traffic`},
		{"ip policy missing", func(b *Bundle) { city(b).IPPolicy = "home" }, []string{c + ".ipPolicy"}, "not defined in ipPolicies"},

		// deploy
		{"deploy stage unknown", func(b *Bundle) { city(b).Deploy = []Stage{"PROD"} }, []string{c + ".deploy[0]"}, "unknown stage"},
		{"deploy stage lower case", func(b *Bundle) { city(b).Deploy = []Stage{"TEST", "release"} }, []string{c + ".deploy[1]"}, "upper case"},
		{"deploy stage duplicate", func(b *Bundle) { city(b).Deploy = []Stage{"PRE", "PRE"} }, []string{c + ".deploy[1]"}, "twice"},
		{"deploy empty ok", func(b *Bundle) { city(b).Deploy = []Stage{} }, nil, ""},

		// apps
		{"app name missing", func(b *Bundle) { b.Apps[1].Name = "" }, []string{"apps[1].name", "ipPolicies[0].apps[0].app"}, "required"},
		{"app name duplicate", func(b *Bundle) { b.Apps[1].Name = "mobile" }, []string{"apps[1].name", "ipPolicies[0].apps[0].app"}, "duplicate app name"},
		{"app name charset", func(b *Bundle) { b.Apps[1].Name = "a|b" }, []string{"apps[1].name", "ipPolicies[0].apps[0].app"}, "app name"},
		{"app key duplicate", func(b *Bundle) { b.Apps[0].Key = "webkey" }, []string{"apps[1].key"}, "apps[0]"},
		{"app secret short", func(b *Bundle) { b.Apps[1].Secret = "short" }, []string{"apps[1].secret"}, "at least 16"},
		{"app code duplicate", func(b *Bundle) { b.Apps[0].Code = "c"; b.Apps[1].Code = "c" }, []string{"apps[1].code"}, "apps[0]"},

		// grants
		{"grant app missing", func(b *Bundle) { b.Grants[0].App = "tablet" }, []string{"grants[0].app"}, `app "tablet" is not defined`},
		{"grant api malformed", func(b *Bundle) { b.Grants[0].API = "city" }, []string{"grants[0].api"}, "GROUP/API"},
		{"grant api missing", func(b *Bundle) { b.Grants[0].API = "weather/town" }, []string{"grants[0].api"}, "not declared"},
		{"grant stage unknown", func(b *Bundle) { b.Grants[0].Stages = []Stage{"DEV"} }, []string{"grants[0].stages[0]"}, "unknown stage"},
		{"grant duplicate", func(b *Bundle) { b.Grants = append(b.Grants, GrantSpec{App: "mobile", API: "weather/city"}) }, []string{"grants[1]"}, "already granted"},

		// traffic
		{"traffic name missing", func(b *Bundle) { b.Traffic[0].Name = "" }, []string{c + ".traffic", "traffic[0].name"}, ""},
		{"traffic name duplicate", func(b *Bundle) { b.Traffic = append(b.Traffic, TrafficSpec{Name: "basic", Window: "day"}) }, []string{"traffic[1].name"}, "duplicate"},
		{"traffic window", func(b *Bundle) { b.Traffic[0].Window = "second" }, []string{"traffic[0].window"}, "unknown window"},
		{"traffic window missing", func(b *Bundle) { b.Traffic[0].Window = "" }, []string{"traffic[0].window"}, "required"},
		{"traffic negative", func(b *Bundle) { b.Traffic[0].User = -1 }, []string{"traffic[0].user"}, "negative"},
		{"traffic app above user", func(b *Bundle) { b.Traffic[0].App = 600 }, []string{"traffic[0].app"}, "greater than user limit"},
		{"traffic app above api", func(b *Bundle) { b.Traffic[0].User = 0; b.Traffic[0].App = 2000 }, []string{"traffic[0].app"}, "greater than api limit"},
		{"traffic user above api", func(b *Bundle) { b.Traffic[0].User = 2000 }, []string{"traffic[0].user"}, "greater than api limit"},
		{"traffic unset levels ok", func(b *Bundle) { b.Traffic[0].API = 0; b.Traffic[0].User = 0 }, nil, ""},
		{"special neither", func(b *Bundle) { b.Traffic[0].Special[1].User = "" }, []string{"traffic[0].special[1]"}, "exactly one"},
		{"special both", func(b *Bundle) { b.Traffic[0].Special[0].User = "bob2" }, []string{"traffic[0].special[0].user"}, "exactly one"},
		{"special app missing", func(b *Bundle) { b.Traffic[0].Special[0].App = "tablet" }, []string{"traffic[0].special[0].app"}, "not defined in apps"},
		{"special above api", func(b *Bundle) { b.Traffic[0].Special[1].Limit = 1001 }, []string{"traffic[0].special[1].limit"}, "greater than api limit"},
		{"special duplicate", func(b *Bundle) {
			b.Traffic[0].Special = append(b.Traffic[0].Special, TrafficSpecial{User: "bob", Limit: 1})
		}, []string{"traffic[0].special[2]"}, "traffic[0].special[1]"},

		// IP policies
		{"ip policy name duplicate", func(b *Bundle) { b.IPPolicies = append(b.IPPolicies, IPPolicy{Name: "office"}) }, []string{"ipPolicies[1].name"}, "duplicate"},
		{"ip bad cidr", func(b *Bundle) { b.IPPolicies[0].Deny = []string{"10.0.0.0/33"} }, []string{"ipPolicies[0].deny[0]"}, "not a CIDR"},
		{"ip bad addr", func(b *Bundle) { b.IPPolicies[0].Allow[2] = "10.0.0" }, []string{"ipPolicies[0].allow[2]"}, "not an IP"},
		{"ip zone", func(b *Bundle) { b.IPPolicies[0].Allow[2] = "fe80::1%eth0" }, []string{"ipPolicies[0].allow[2]"}, "not an IP"},
		{"ip app missing", func(b *Bundle) { b.IPPolicies[0].Apps[0].App = "tablet" }, []string{"ipPolicies[0].apps[0].app"}, "not defined"},
		{"ip app allow empty", func(b *Bundle) { b.IPPolicies[0].Apps[0].Allow = nil }, []string{"ipPolicies[0].apps[0].allow"}, "required"},
		{"ip app allow bad", func(b *Bundle) { b.IPPolicies[0].Apps[0].Allow = []string{"x"} }, []string{"ipPolicies[0].apps[0].allow[0]"}, "not an IP"},

		// backend keys
		{"backend key name missing", func(b *Bundle) { b.BackendKeys[0].Name = "" }, []string{c + ".backend.signature", "backendKeys[0].name"}, ""},
		{"backend key key missing", func(b *Bundle) { b.BackendKeys[0].Key = "" }, []string{"backendKeys[0].key"}, "required"},
		{"backend key secret missing", func(b *Bundle) { b.BackendKeys[0].Secret = "" }, []string{"backendKeys[0].secret"}, "required"},
		{"backend key duplicate key", func(b *Bundle) {
			b.BackendKeys = append(b.BackendKeys, BackendKey{Name: "k2", Key: "DemoKey1", Secret: "x"})
		}, []string{"backendKeys[1].key"}, "already used"},

		// certificates
		{"cert not pem", func(b *Bundle) { b.Certificates[0].Cert = "x" }, []string{"certificates[0].cert"}, "not a PEM pair"},
		{"cert key mismatch", func(b *Bundle) { b.Certificates[0].Key = testPEM().ecPub }, []string{"certificates[0].cert"}, "not a PEM pair"},
		{"cert key missing", func(b *Bundle) { b.Certificates[0].Key = "" }, []string{"certificates[0].key"}, "required"},
		{"cert domains missing", func(b *Bundle) { b.Certificates[0].Domains = nil }, []string{"certificates[0].domains"}, "required"},
		{"cert domain bad", func(b *Bundle) { b.Certificates[0].Domains[1] = "*" }, []string{"certificates[0].domains[1]"}, "hostname"},
		{"cert name duplicate", func(b *Bundle) {
			b.Certificates = append(b.Certificates, b.Certificates[0])
		}, []string{"certificates[1].name"}, "duplicate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := validBundle()
			tc.mutate(b)
			err := b.Validate()
			if tc.paths == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want *ValidationError, got %v", err)
			}
			var got []string
			for _, fe := range ve.Errors {
				got = append(got, fe.Path)
			}
			if !slices.Equal(got, tc.paths) {
				t.Fatalf("paths = %q, want %q\n%v", got, tc.paths, err)
			}
			if !strings.Contains(ve.Errors[0].Message, tc.msg) {
				t.Fatalf("message %q does not contain %q", ve.Errors[0].Message, tc.msg)
			}
		})
	}
}

func TestValidateErrorListsAll(t *testing.T) {
	b := validBundle()
	b.Groups[0].APIs[0].Method = "FETCH"
	b.Grants[0].App = "tablet"
	b.Traffic[0].Window = "week"
	err := b.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 3 {
		t.Fatalf("want 3 errors, got %v", err)
	}
	want := `invalid configuration (3 problems):
  groups[0].apis[0].method: unknown method "FETCH" (want one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ANY)
  grants[0].app: app "tablet" is not defined in apps
  traffic[0].window: unknown window "week" (want minute, hour or day)`
	if err.Error() != want {
		t.Fatalf("got\n%s\nwant\n%s", err, want)
	}
}

// TestValidateDeterministic guards the order of errors: the admin API and the CLI
// print them as they come, and a flaky order would make diffs and tests noisy.
func TestValidateDeterministic(t *testing.T) {
	b := validBundle()
	b.Groups[0].APIs[2].Backend.Headers = map[string]string{"a b": "1", "c d": "2", "e f": "3", "g h": "4"}
	first := b.Validate().Error()
	for range 20 {
		if got := b.Validate().Error(); got != first {
			t.Fatalf("order changed:\n%s\n%s", first, got)
		}
	}
}
