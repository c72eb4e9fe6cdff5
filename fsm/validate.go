package fsm

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// FieldError is one problem in a bundle. Path locates the field in the declarative
// file with its YAML/JSON names, like groups[0].apis[1].backend.url, so that a client
// holding the file can point at the line (config.Locate does).
type FieldError struct {
	Path    string `json:"path" msgpack:"path"`
	Message string `json:"message" msgpack:"message"`
}

func (e FieldError) Error() string { return e.Path + ": " + e.Message }

// ValidationError is every problem Bundle.Validate found, in file order. It is returned
// whole rather than on the first problem so a user fixes a file in one pass.
type ValidationError struct {
	Errors []FieldError `json:"errors" msgpack:"errors"`
}

// Error lists every problem, one per line.
func (e *ValidationError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "invalid configuration (%d problem", len(e.Errors))
	if len(e.Errors) != 1 {
		sb.WriteString("s")
	}
	sb.WriteString("):")
	for _, fe := range e.Errors {
		sb.WriteString("\n  ")
		sb.WriteString(fe.Error())
	}
	return sb.String()
}

// Limits enforced by Validate.
const (
	// MaxBackendTimeout bounds a backend timeout: a longer call would hold a proxy
	// connection and its goroutine for longer than any client waits.
	MaxBackendTimeout = 10 * time.Minute
	// MaxMockBody bounds a mock backend's body (Alibaba's MOCK limit): it travels in
	// every raft command and snapshot that carries the API.
	MaxMockBody = 50 << 10
	// MinAppSecretLen is the shortest app secret accepted when a file sets one: a
	// shorter HMAC key can be brute-forced from one signed request.
	MinAppSecretLen = 16
	// maxNameLen bounds names; they appear in URLs, metrics labels and raft keys.
	maxNameLen = 64
)

// Methods lists the frontend methods an API can declare. ANY matches every method; the
// router prefers an API with the exact method over an ANY one on the same path.
var Methods = []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"}

// ParamTypes lists parameter types; all but array are scalar.
var ParamTypes = []string{"string", "int", "long", "float", "double", "boolean", "array"}

// SystemParams lists the gateway-known values a backend can receive.
var SystemParams = []string{"CaClientIp", "CaRequestId", "CaAppId", "CaAppKey", "CaApiName",
	"CaStage", "CaDomain", "CaHttpSchema", "CaRequestHandleTime", "CaProxy"}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	labelRE    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	identRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostnameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

// Validate checks the whole bundle without touching the network or the clock: names,
// paths, methods, parameters, backends, and that every reference (grant, traffic
// policy, IP policy, backend key) resolves inside the bundle. It returns nil or a
// *ValidationError listing every problem. It does not modify b; values are checked as
// written (methods and stages must be upper case), nothing is normalised. Safe for
// concurrent use on a bundle nobody modifies.
func (b *Bundle) Validate() error {
	v := &validator{
		apps:        map[string]bool{},
		traffic:     map[string]*TrafficSpec{},
		ipPolicies:  map[string]bool{},
		backendKeys: map[string]bool{},
		apis:        map[string]bool{},
	}
	// References may point forward in the file, so index every name first.
	for _, a := range b.Apps {
		v.apps[a.Name] = true
	}
	for i := range b.Traffic {
		if _, ok := v.traffic[b.Traffic[i].Name]; !ok {
			v.traffic[b.Traffic[i].Name] = &b.Traffic[i]
		}
	}
	for _, p := range b.IPPolicies {
		v.ipPolicies[p.Name] = true
	}
	for _, k := range b.BackendKeys {
		v.backendKeys[k.Name] = true
	}
	for _, g := range b.Groups {
		for _, a := range g.APIs {
			v.apis[APIRef(g.Name, a.Name)] = true
		}
	}

	v.groups(b.Groups)
	v.appSpecs(b.Apps)
	v.grants(b.Grants)
	v.trafficSpecs(b.Traffic)
	v.ipPolicySpecs(b.IPPolicies)
	v.backendKeySpecs(b.BackendKeys)
	v.certificates(b.Certificates)
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Errors: v.errs}
}

type validator struct {
	errs        []FieldError
	apps        map[string]bool
	traffic     map[string]*TrafficSpec
	ipPolicies  map[string]bool
	backendKeys map[string]bool
	apis        map[string]bool
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func idx(p string, i int) string { return p + "[" + strconv.Itoa(i) + "]" }

// key appends a map key to a path: .name when it reads unambiguously, ["name"] when it
// holds characters the path syntax uses.
func key(p, k string) string {
	if k != "" && !strings.ContainsAny(k, `.[]"`) {
		return p + "." + k
	}
	return p + "[" + strconv.Quote(k) + "]"
}

const nameRule = "use letters, digits, '.', '_' and '-', starting with a letter or digit"

// firstIndex records k as seen at i, or returns the index where it was first seen.
func firstIndex(seen map[string]int, k string, i int) (int, bool) {
	if f, ok := seen[k]; ok {
		return f, true
	}
	seen[k] = i
	return 0, false
}

// ---- groups and APIs ----

func (v *validator) groups(gs []GroupSpec) {
	names := map[string]int{}
	domains := map[string]string{} // domain → path of its first use
	for i, g := range gs {
		p := idx("groups", i)
		if f, dup := firstIndex(names, g.Name, i); dup && g.Name != "" {
			v.add(p+".name", "duplicate group name %q (first at groups[%d])", g.Name, f)
		} else if g.Name == "" {
			v.add(p+".name", "required")
		} else if len(g.Name) > 63 || !labelRE.MatchString(g.Name) {
			// The group is reached at <name>.<base-domain>, so the name is a DNS label.
			v.add(p+".name", "group name %q must be a DNS label: lower-case letters, digits and '-', at most 63, not starting or ending with '-'", g.Name)
		}
		for j, d := range g.Domains {
			dp := idx(p+".domains", j)
			if msg := checkHostname(d, false); msg != "" {
				v.add(dp, "%s", msg)
				continue
			}
			if first, dup := domains[d]; dup {
				v.add(dp, "domain %q is already used at %s", d, first)
				continue
			}
			domains[d] = dp
		}
		v.apiSpecs(p, g.APIs)
	}
}

// checkHostname returns why h is not a lower-case hostname, or "". Domains are matched
// against the Host header exactly, so the file must spell them in lower case.
func checkHostname(h string, wildcard bool) string {
	if h == "" {
		return "empty domain"
	}
	if len(h) > 253 {
		return fmt.Sprintf("domain %q is longer than 253 characters", h)
	}
	rest := h
	if wildcard && strings.HasPrefix(h, "*.") {
		rest = h[2:]
	}
	for _, l := range strings.Split(rest, ".") {
		if len(l) > 63 || !hostnameRE.MatchString(l) {
			return fmt.Sprintf("%q is not a valid hostname (lower-case labels of letters, digits and '-', no port, no trailing dot)", h)
		}
	}
	return ""
}

// pathSeg is one segment of an API path: a literal or a [param].
type pathSeg struct {
	param bool
	text  string
}

// parsePath splits an API path into segments, or says why it is malformed. A trailing
// slash yields a final empty literal segment.
func parsePath(p string) ([]pathSeg, string) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Sprintf("path %q must start with '/'", p)
	}
	if i := strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' }); i >= 0 {
		return nil, fmt.Sprintf("path %q must not contain spaces, control characters, '?' or '#' (declare query parameters in params)", p)
	}
	parts := strings.Split(p[1:], "/")
	segs := make([]pathSeg, 0, len(parts))
	seen := map[string]bool{}
	for i, s := range parts {
		if s == "" && i != len(parts)-1 {
			return nil, fmt.Sprintf("path %q has an empty segment (//)", p)
		}
		if !strings.ContainsAny(s, "[]") {
			segs = append(segs, pathSeg{text: s})
			continue
		}
		if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' || strings.ContainsAny(s[1:len(s)-1], "[]") {
			return nil, fmt.Sprintf("path %q: segment %q: a parameter must be a whole segment, like /[name]", p, s)
		}
		n := s[1 : len(s)-1]
		if !identRE.MatchString(n) {
			return nil, fmt.Sprintf("path %q: parameter [%s]: use letters, digits and '_', not starting with a digit", p, n)
		}
		if seen[n] {
			return nil, fmt.Sprintf("path %q: parameter [%s] appears twice", p, n)
		}
		seen[n] = true
		segs = append(segs, pathSeg{param: true, text: n})
	}
	return segs, ""
}

// pathShape is the path with every parameter a wildcard and no trailing slash: two
// APIs of a group with the same method and shape would match the same requests.
func pathShape(segs []pathSeg) string {
	var sb strings.Builder
	for i, s := range segs {
		if i == len(segs)-1 && !s.param && s.text == "" {
			break
		}
		sb.WriteByte('/')
		if s.param {
			sb.WriteString("[]")
		} else {
			sb.WriteString(s.text)
		}
	}
	return sb.String()
}

func methodCarriesBody(m string) bool {
	return m == "POST" || m == "PUT" || m == "PATCH" || m == "ANY"
}

func (v *validator) apiSpecs(gp string, apis []APISpec) {
	names := map[string]int{}
	routes := map[string]int{} // method + shape → index of the first API
	for i, a := range apis {
		p := idx(gp+".apis", i)
		if f, dup := firstIndex(names, a.Name, i); dup && a.Name != "" {
			v.add(p+".name", "duplicate API name %q in this group (first at %s)", a.Name, idx(gp+".apis", f))
		} else if a.Name == "" {
			v.add(p+".name", "required")
		} else if len(a.Name) > maxNameLen || !nameRE.MatchString(a.Name) {
			// Grants refer to GROUP/API, so an API name must not contain '/'.
			v.add(p+".name", "API name %q: %s, at most %d", a.Name, nameRule, maxNameLen)
		}
		segs := v.apiDef(p, &a.APIDef)
		if segs != nil && slices.Contains(Methods, a.Method) {
			route := a.Method + " " + pathShape(segs)
			if f, dup := firstIndex(routes, route, i); dup {
				v.add(p+".path", "%s %s conflicts with API %q (%s): same method and path shape", a.Method, a.Path, apis[f].Name, idx(gp+".apis", f))
			}
		}
		v.stages(p+".deploy", a.Deploy)
	}
}

// apiDef checks one API definition and returns its parsed path (nil if malformed).
// Guards lists the request guards an API may opt into.
var Guards = []string{"injection"}

func (v *validator) apiDef(p string, d *APIDef) []pathSeg {
	for i, g := range d.Guard {
		if !slices.Contains(Guards, g) {
			v.add(idx(p+".guard", i), "unknown guard %q (want one of %s)", g, strings.Join(Guards, ", "))
		}
	}
	switch {
	case d.Method == "":
		v.add(p+".method", "required (one of %s)", strings.Join(Methods, ", "))
	case !slices.Contains(Methods, d.Method):
		if slices.Contains(Methods, strings.ToUpper(d.Method)) {
			v.add(p+".method", "write the method in upper case: %s", strings.ToUpper(d.Method))
		} else {
			v.add(p+".method", "unknown method %q (want one of %s)", d.Method, strings.Join(Methods, ", "))
		}
	}

	var segs []pathSeg
	pathParams := map[string]bool{}
	if d.Path == "" {
		v.add(p+".path", "required")
	} else {
		var msg string
		if segs, msg = parsePath(d.Path); msg != "" {
			v.add(p+".path", "%s", msg)
		}
		for _, s := range segs {
			if s.param {
				pathParams[s.text] = true
			}
		}
	}

	switch d.Auth {
	case AuthApp, AuthAppCode, AuthAnonymous:
		if d.JWT != nil {
			v.add(p+".jwt", "set only with auth: jwt")
		}
	case AuthJWT:
		if d.JWT == nil {
			v.add(p+".jwt", "required with auth: jwt (keys or jwks)")
		} else {
			v.jwt(p+".jwt", d.JWT)
		}
	case "":
		v.add(p+".auth", "required (app, appcode, jwt or anonymous)")
	default:
		v.add(p+".auth", "unknown auth %q (want app, appcode, jwt or anonymous)", d.Auth)
	}

	declared := map[string]*Param{}
	hasForm := false
	for i := range d.Params {
		pp := idx(p+".params", i)
		prm := &d.Params[i]
		if prm.Name != "" {
			if _, dup := declared[prm.Name]; dup {
				v.add(pp+".name", "duplicate parameter %q", prm.Name)
			} else {
				declared[prm.Name] = prm
			}
		}
		v.param(pp, prm)
		switch prm.In {
		case InPath:
			if prm.Name != "" && segs != nil && !pathParams[prm.Name] {
				v.add(pp+".name", "path parameter %q does not appear in path %s as [%s]", prm.Name, d.Path, prm.Name)
			}
		case InForm:
			hasForm = true
			if d.Method != "" && slices.Contains(Methods, d.Method) && !methodCarriesBody(d.Method) {
				v.add(pp+".in", "form parameters need a method with a body (POST, PUT, PATCH or ANY), not %s", d.Method)
			}
		}
	}
	if len(d.Params) > 0 {
		// An API that declares parameters passes only those, so a path parameter it
		// forgot would never reach the backend.
		for _, s := range segs {
			if s.param {
				if prm, ok := declared[s.text]; !ok || prm.In != InPath {
					v.add(p+".path", "path parameter [%s] is not declared in params with in: path", s.text)
				}
			}
		}
	}

	if d.Body != nil {
		bp := p + ".body"
		switch {
		case d.Body.Schema == "":
			v.add(bp+".schema", "required when body is set")
		default:
			if msg := checkJSONSchema(string(d.Body.Schema)); msg != "" {
				v.add(bp+".schema", "%s", msg)
			}
		}
		if d.Method != "" && slices.Contains(Methods, d.Method) && !methodCarriesBody(d.Method) {
			v.add(bp, "a body schema needs a method with a body (POST, PUT, PATCH or ANY), not %s", d.Method)
		}
		if hasForm {
			v.add(bp, "a JSON body schema and form parameters exclude each other")
		}
	}

	v.backend(p+".backend", &d.Backend, pathParams, declared)

	if d.Traffic != "" && v.traffic[d.Traffic] == nil {
		v.add(p+".traffic", "traffic policy %q is not defined in traffic", d.Traffic)
	}
	if d.IPPolicy != "" && !v.ipPolicies[d.IPPolicy] {
		v.add(p+".ipPolicy", "IP policy %q is not defined in ipPolicies", d.IPPolicy)
	}
	return segs
}

// ---- parameters ----

func isNumeric(t string) bool { return t == "int" || t == "long" || t == "float" || t == "double" }

// checkValue says why s is not a value of the scalar type t, or "".
func checkValue(t, s string) string {
	var err error
	switch t {
	case "", "string":
		return ""
	case "int":
		_, err = strconv.ParseInt(s, 10, 32)
	case "long":
		_, err = strconv.ParseInt(s, 10, 64)
	case "float", "double":
		bits := 64
		if t == "float" {
			bits = 32
		}
		var f float64
		f, err = strconv.ParseFloat(s, bits)
		if err == nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
			err = strconv.ErrRange
		}
	case "boolean":
		if s != "true" && s != "false" {
			return fmt.Sprintf("%q is not a boolean (true or false)", s)
		}
	}
	if err != nil {
		return fmt.Sprintf("%q is not a valid %s", s, t)
	}
	return ""
}

func (v *validator) param(p string, prm *Param) {
	if prm.Name == "" {
		v.add(p+".name", "required")
	} else if prm.In == InHeader && !isToken(prm.Name) {
		v.add(p+".name", "%q is not a valid header name", prm.Name)
	}
	switch prm.In {
	case InPath, InQuery, InHeader, InForm:
	case "":
		v.add(p+".in", "required (path, query, header or form)")
	default:
		v.add(p+".in", "unknown location %q (want path, query, header or form)", prm.In)
	}

	typ := prm.Type
	if typ == "" {
		typ = "string"
	}
	if !slices.Contains(ParamTypes, typ) {
		v.add(p+".type", "unknown type %q (want %s)", prm.Type, strings.Join(ParamTypes, ", "))
		return // the value checks below need a type
	}
	elem := typ
	if typ == "array" {
		switch {
		case prm.Items == "":
			v.add(p+".items", "required for an array (the type of its elements)")
			elem = "string"
		case prm.Items == "array" || !slices.Contains(ParamTypes, prm.Items):
			v.add(p+".items", "unknown element type %q (want string, int, long, float, double or boolean)", prm.Items)
			elem = "string"
		default:
			elem = prm.Items
		}
		if prm.In == InPath {
			v.add(p+".type", "a path parameter cannot be an array")
		}
	} else if prm.Items != "" {
		v.add(p+".items", "set only for type: array")
	}

	// Bounds apply to the (element) value: min/max to numbers, lengths to strings.
	if prm.Min != nil || prm.Max != nil {
		if !isNumeric(elem) {
			f := ".min"
			if prm.Min == nil {
				f = ".max"
			}
			v.add(p+f, "min and max apply to numeric types (int, long, float, double), not %s", elem)
		} else if prm.Min != nil && prm.Max != nil && *prm.Min > *prm.Max {
			v.add(p+".min", "min %v is greater than max %v", *prm.Min, *prm.Max)
		}
	}
	if prm.MinLength != nil && *prm.MinLength < 0 {
		v.add(p+".minLength", "must not be negative")
	}
	if prm.MaxLength != nil && *prm.MaxLength < 0 {
		v.add(p+".maxLength", "must not be negative")
	}
	if prm.MinLength != nil && prm.MaxLength != nil && *prm.MinLength > *prm.MaxLength {
		v.add(p+".minLength", "minLength %d is greater than maxLength %d", *prm.MinLength, *prm.MaxLength)
	}
	if (prm.MinLength != nil || prm.MaxLength != nil) && elem != "string" {
		v.add(p+".minLength", "minLength and maxLength apply to strings, not %s", elem)
	}
	var re *regexp.Regexp
	if prm.Regex != "" {
		var err error
		if re, err = regexp.Compile(prm.Regex); err != nil {
			v.add(p+".regex", "does not compile: %v", err)
		}
	}
	for i, e := range prm.Enum {
		if msg := checkValue(elem, e); msg != "" {
			v.add(idx(p+".enum", i), "%s", msg)
		}
	}
	if prm.Default != nil {
		vals := []string{*prm.Default}
		if typ == "array" {
			vals = strings.Split(*prm.Default, ",")
		}
		for _, s := range vals {
			if msg := v.defaultFits(prm, elem, re, s); msg != "" {
				v.add(p+".default", "%s", msg)
				break
			}
		}
	}
}

// defaultFits says why a default value would fail the parameter's own checks, or "".
func (v *validator) defaultFits(prm *Param, elem string, re *regexp.Regexp, s string) string {
	if msg := checkValue(elem, s); msg != "" {
		return msg
	}
	if len(prm.Enum) > 0 && !slices.Contains(prm.Enum, s) {
		return fmt.Sprintf("%q is not one of enum", s)
	}
	if isNumeric(elem) {
		f, _ := strconv.ParseFloat(s, 64)
		if prm.Min != nil && f < *prm.Min || prm.Max != nil && f > *prm.Max {
			return fmt.Sprintf("%q is outside min..max", s)
		}
	}
	if elem == "string" {
		n := utf8.RuneCountInString(s)
		if prm.MinLength != nil && n < *prm.MinLength || prm.MaxLength != nil && n > *prm.MaxLength {
			return fmt.Sprintf("%q is outside minLength..maxLength", s)
		}
	}
	if re != nil && !re.MatchString(s) {
		return fmt.Sprintf("%q does not match regex", s)
	}
	return ""
}

// isToken reports whether s is an HTTP token (RFC 9110), as header names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// noLoader refuses every external reference so that compiling a schema stays pure: no
// network, no file system.
type noLoader struct{}

func (noLoader) Load(u string) (any, error) {
	return nil, fmt.Errorf("external references are not allowed (%s)", u)
}

// checkJSONSchema says why doc is not a compilable JSON Schema, or "".
func checkJSONSchema(doc string) string {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		return fmt.Sprintf("not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	const loc = "tollgate:///body.json"
	if err := c.AddResource(loc, v); err != nil {
		return fmt.Sprintf("invalid JSON Schema: %v", err)
	}
	if _, err := c.Compile(loc); err != nil {
		return fmt.Sprintf("invalid JSON Schema: %v", oneLine(err.Error()))
	}
	return ""
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ---- backends ----

var backendLocations = []string{InPath, InQuery, InHeader, InForm}

func (v *validator) backend(p string, be *Backend, pathParams map[string]bool, declared map[string]*Param) {
	// Backend path [x] segments are filled from frontend path parameters, or from
	// mappings, constants and system parameters sent in: path under the name x.
	toPath := map[string]bool{}
	for _, m := range be.Map {
		if m.In == InPath {
			toPath[m.Name] = true
		}
	}
	for _, c := range be.Constants {
		if c.In == InPath {
			toPath[c.Name] = true
		}
	}
	for _, s := range be.System {
		if s.In == InPath {
			toPath[s.Name] = true
		}
	}
	backendPathParams := map[string]bool{}

	switch be.Type {
	case BackendHTTP:
		switch u, err := url.Parse(be.URL); {
		case be.URL == "":
			v.add(p+".url", "required for an http backend")
		case err != nil:
			v.add(p+".url", "%q is not a URL: %v", be.URL, err)
		case u.Scheme != "http" && u.Scheme != "https":
			v.add(p+".url", "%q: want an absolute http:// or https:// URL", be.URL)
		case u.Host == "" || u.Hostname() == "":
			v.add(p+".url", "%q has no host", be.URL)
		case u.Fragment != "" || u.User != nil:
			v.add(p+".url", "%q must not carry a fragment or user info", be.URL)
		}
		if be.Method != "" && (be.Method == "ANY" || !slices.Contains(Methods, be.Method)) {
			v.add(p+".method", "unknown backend method %q (want GET, POST, PUT, DELETE, PATCH, HEAD or OPTIONS, in upper case)", be.Method)
		}
		if be.Path != "" {
			segs, msg := parsePath(be.Path)
			if msg != "" {
				v.add(p+".path", "%s", msg)
			}
			for _, s := range segs {
				if !s.param {
					continue
				}
				backendPathParams[s.text] = true
				if !pathParams[s.text] && !toPath[s.text] {
					v.add(p+".path", "[%s] is neither a path parameter of the API's path nor mapped to the backend path", s.text)
				}
			}
		}
		if be.Timeout < 0 || be.Timeout.D() > MaxBackendTimeout {
			v.add(p+".timeout", "%s is out of range (more than 0, at most %s)", be.Timeout, MaxBackendTimeout)
		}
		if be.CA != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(be.CA)) {
			v.add(p+".ca", "holds no PEM certificate")
		}
		if be.Signature != "" && !v.backendKeys[be.Signature] {
			v.add(p+".signature", "backend key %q is not defined in backendKeys", be.Signature)
		}
		// Mock fields on an http backend are a mistake the file should not hide.
		if be.Status != 0 {
			v.add(p+".status", "set only for a mock backend")
		}
		if be.Body != "" {
			v.add(p+".body", "set only for a mock backend")
		}
		if len(be.Headers) > 0 {
			v.add(p+".headers", "set only for a mock backend")
		}
		if be.Delay != 0 {
			v.add(p+".delay", "set only for a mock backend")
		}
	case BackendMock:
		// Status 0 means 200.
		if be.Status != 0 && (be.Status < 100 || be.Status > 599) {
			v.add(p+".status", "%d is not an HTTP status (100..599)", be.Status)
		}
		if len(be.Body) > MaxMockBody {
			v.add(p+".body", "%d bytes is more than the mock limit of %d", len(be.Body), MaxMockBody)
		}
		for _, h := range slices.Sorted(mapKeys(be.Headers)) {
			if !isToken(h) {
				v.add(key(p+".headers", h), "%q is not a valid header name", h)
			}
		}
		if be.Delay < 0 || be.Delay.D() > MaxBackendTimeout {
			v.add(p+".delay", "%s is out of range (0 to %s)", be.Delay, MaxBackendTimeout)
		}
		for _, f := range []struct {
			name string
			set  bool
		}{{"url", be.URL != ""}, {"method", be.Method != ""}, {"path", be.Path != ""},
			{"timeout", be.Timeout != 0}, {"ca", be.CA != ""}, {"signature", be.Signature != ""}} {
			if f.set {
				v.add(p+"."+f.name, "set only for an http backend")
			}
		}
	case "":
		v.add(p+".type", "required (http or mock)")
	default:
		v.add(p+".type", "unknown backend type %q (want http or mock)", be.Type)
	}

	for i, m := range be.Map {
		mp := idx(p+".map", i)
		switch {
		case m.Param == "":
			v.add(mp+".param", "required")
		case declared[m.Param] == nil:
			v.add(mp+".param", "%q is not a declared parameter of this API", m.Param)
		}
		v.target(mp, m.In, m.Name, be.Type == BackendHTTP && be.Path != "", backendPathParams)
	}
	for i, c := range be.Constants {
		v.target(idx(p+".constants", i), c.In, c.Name, be.Type == BackendHTTP && be.Path != "", backendPathParams)
	}
	for i, s := range be.System {
		sp := idx(p+".system", i)
		switch {
		case s.Param == "":
			v.add(sp+".param", "required (one of %s)", strings.Join(SystemParams, ", "))
		case !slices.Contains(SystemParams, s.Param):
			v.add(sp+".param", "unknown system parameter %q (want one of %s)", s.Param, strings.Join(SystemParams, ", "))
		}
		v.target(sp, s.In, s.Name, be.Type == BackendHTTP && be.Path != "", backendPathParams)
	}
}

// target checks where a value goes in the backend request: in and name.
func (v *validator) target(p, in, name string, checkPath bool, backendPathParams map[string]bool) {
	switch {
	case in == "":
		v.add(p+".in", "required (path, query, header or form)")
	case !slices.Contains(backendLocations, in):
		v.add(p+".in", "unknown location %q (want path, query, header or form)", in)
	}
	switch {
	case name == "":
		v.add(p+".name", "required")
	case in == InHeader && !isToken(name):
		v.add(p+".name", "%q is not a valid header name", name)
	case in == InPath && checkPath && !backendPathParams[name]:
		v.add(p+".name", "backend.path has no [%s] segment to put it in", name)
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ---- JWT ----

var jwtAlgs = []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func (v *validator) jwt(p string, j *JWTSpec) {
	if len(j.Keys) == 0 && j.JWKS == "" {
		v.add(p+".keys", "keys or jwks required")
	}
	if j.From != "" {
		where, n, ok := strings.Cut(j.From, ":")
		if !ok || n == "" || (where != "header" && where != "query" && where != "cookie") {
			v.add(p+".from", "%q: want header:NAME, query:NAME or cookie:NAME", j.From)
		}
	}
	kids := map[string]bool{}
	for i, k := range j.Keys {
		kp := idx(p+".keys", i)
		if k.Kid != "" {
			if kids[k.Kid] {
				v.add(kp+".kid", "duplicate kid %q", k.Kid)
			}
			kids[k.Kid] = true
		}
		if !slices.Contains(jwtAlgs, k.Alg) {
			v.add(kp+".alg", "unknown algorithm %q (want one of %s)", k.Alg, strings.Join(jwtAlgs, ", "))
			continue
		}
		if strings.HasPrefix(k.Alg, "HS") {
			if k.Secret == "" {
				v.add(kp+".secret", "required for %s", k.Alg)
			}
			if k.PEM != "" {
				v.add(kp+".pem", "not used by %s (it takes a secret)", k.Alg)
			}
			continue
		}
		if k.Secret != "" {
			v.add(kp+".secret", "not used by %s (it takes a pem public key)", k.Alg)
		}
		if k.PEM == "" {
			v.add(kp+".pem", "required for %s", k.Alg)
		} else if msg := checkPublicKey(k.Alg, k.PEM); msg != "" {
			v.add(kp+".pem", "%s", msg)
		}
	}
	if j.JWKS != "" {
		var set struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal([]byte(j.JWKS), &set); err != nil || len(set.Keys) == 0 {
			v.add(p+".jwks", "want a JWK set: an object with a non-empty keys array")
		} else {
			for i, k := range set.Keys {
				if _, ok := k["kty"].(string); !ok {
					v.add(idx(p+".jwks.keys", i)+".kty", "required")
				}
			}
		}
	}
	for i, c := range j.Claims {
		cp := idx(p+".claims", i)
		if c.Claim == "" {
			v.add(cp+".claim", "required")
		}
		v.target(cp, c.In, c.Name, false, nil)
	}
}

// checkPublicKey says why pemText is not a public key (or certificate) for alg, or "".
func checkPublicKey(alg, pemText string) string {
	blk, _ := pem.Decode([]byte(pemText))
	if blk == nil {
		return "not PEM"
	}
	var pub any
	var err error
	switch blk.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(blk.Bytes); err == nil {
			pub = c.PublicKey
		}
	default:
		return fmt.Sprintf("PEM block %q: want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", blk.Type)
	}
	if err != nil {
		return fmt.Sprintf("cannot parse the key: %v", err)
	}
	var ok bool
	switch alg[:2] {
	case "RS", "PS":
		_, ok = pub.(*rsa.PublicKey)
	case "ES":
		_, ok = pub.(*ecdsa.PublicKey)
	default:
		_, ok = pub.(ed25519.PublicKey)
	}
	if !ok {
		return fmt.Sprintf("the key's type (%T) does not fit %s", pub, alg)
	}
	return ""
}

// ---- apps, grants, policies, keys, certificates ----

func (v *validator) appSpecs(apps []AppSpec) {
	names := map[string]int{}
	keys := map[string]int{}
	codes := map[string]int{}
	for i, a := range apps {
		p := idx("apps", i)
		v.listName(p+".name", "app", a.Name, names, i, "apps")
		if a.Key != "" {
			if f, dup := firstIndex(keys, a.Key, i); dup {
				v.add(p+".key", "key is already used by apps[%d]", f)
			}
		}
		if a.Secret != "" && len(a.Secret) < MinAppSecretLen {
			v.add(p+".secret", "at least %d characters (or leave it out to have one generated)", MinAppSecretLen)
		}
		if a.Code != "" {
			if f, dup := firstIndex(codes, a.Code, i); dup {
				v.add(p+".code", "code is already used by apps[%d]", f)
			}
		}
	}
}

// listName checks a required, unique name of a top-level list entry.
func (v *validator) listName(p, what, n string, seen map[string]int, i int, list string) {
	switch {
	case n == "":
		v.add(p, "required")
		return
	case len(n) > maxNameLen || !nameRE.MatchString(n):
		v.add(p, "%s name %q: %s, at most %d", what, n, nameRule, maxNameLen)
	}
	if f, dup := firstIndex(seen, n, i); dup {
		v.add(p, "duplicate %s name %q (first at %s)", what, n, idx(list, f))
	}
}

func (v *validator) stages(p string, ss []Stage) {
	seen := map[Stage]bool{}
	for j, s := range ss {
		sp := idx(p, j)
		if !s.Valid() {
			v.add(sp, "unknown stage %q (want TEST, PRE or RELEASE, in upper case)", s)
		} else if seen[s] {
			v.add(sp, "stage %s listed twice", s)
		}
		seen[s] = true
	}
}

func (v *validator) grants(gs []GrantSpec) {
	seen := map[string]int{}
	for i, g := range gs {
		p := idx("grants", i)
		switch {
		case g.App == "":
			v.add(p+".app", "required")
		case !v.apps[g.App]:
			v.add(p+".app", "app %q is not defined in apps", g.App)
		}
		switch {
		case g.API == "":
			v.add(p+".api", "required (GROUP/API)")
		default:
			if _, _, ok := SplitAPIRef(g.API); !ok {
				v.add(p+".api", "%q: want GROUP/API", g.API)
			} else if !v.apis[g.API] {
				v.add(p+".api", "API %q is not declared in groups", g.API)
			}
		}
		v.stages(p+".stages", g.Stages)
		if g.App != "" && g.API != "" {
			if f, dup := firstIndex(seen, GrantKey(g.App, g.API), i); dup {
				v.add(p, "app %q is already granted %q at grants[%d]", g.App, g.API, f)
			}
		}
	}
}

func (v *validator) trafficSpecs(ts []TrafficSpec) {
	names := map[string]int{}
	for i, t := range ts {
		p := idx("traffic", i)
		v.listName(p+".name", "traffic policy", t.Name, names, i, "traffic")
		switch t.Window {
		case WindowMinute, WindowHour, WindowDay:
		case "":
			v.add(p+".window", "required (minute, hour or day)")
		default:
			v.add(p+".window", "unknown window %q (want minute, hour or day)", t.Window)
		}
		for _, f := range []struct {
			name string
			n    int64
		}{{"api", t.API}, {"app", t.App}, {"user", t.User}} {
			if f.n < 0 {
				v.add(p+"."+f.name, "must not be negative")
			}
		}
		// Alibaba's hierarchy: an app's quota fits in a user's, a user's in the API's.
		switch {
		case t.App > 0 && t.User > 0 && t.App > t.User:
			v.add(p+".app", "app limit %d is greater than user limit %d", t.App, t.User)
		case t.App > 0 && t.API > 0 && t.App > t.API:
			v.add(p+".app", "app limit %d is greater than api limit %d", t.App, t.API)
		}
		if t.User > 0 && t.API > 0 && t.User > t.API {
			v.add(p+".user", "user limit %d is greater than api limit %d", t.User, t.API)
		}
		seen := map[string]int{}
		for j, s := range t.Special {
			sp := idx(p+".special", j)
			switch {
			case s.App == "" && s.User == "":
				v.add(sp, "set exactly one of app or user")
			case s.App != "" && s.User != "":
				v.add(sp+".user", "set exactly one of app or user")
			case s.App != "" && !v.apps[s.App]:
				v.add(sp+".app", "app %q is not defined in apps", s.App)
			}
			if s.Limit < 0 {
				v.add(sp+".limit", "must not be negative")
			} else if t.API > 0 && s.Limit > t.API {
				v.add(sp+".limit", "special limit %d is greater than api limit %d", s.Limit, t.API)
			}
			k := "app:" + s.App
			if s.App == "" {
				k = "user:" + s.User
			}
			if s.App != "" || s.User != "" {
				if f, dup := firstIndex(seen, k, j); dup {
					v.add(sp, "%s is already given a special limit at %s", strings.Replace(k, ":", " ", 1), idx(p+".special", f))
				}
			}
		}
	}
}

// checkAddr says why s is neither an IP address nor a CIDR, or "".
func checkAddr(s string) string {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Sprintf("%q is not a CIDR: %v", s, err)
		}
		return ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return fmt.Sprintf("%q is not an IP address or CIDR", s)
	}
	return ""
}

func (v *validator) addrs(p string, list []string) {
	for i, s := range list {
		if msg := checkAddr(s); msg != "" {
			v.add(idx(p, i), "%s", msg)
		}
	}
}

func (v *validator) ipPolicySpecs(ps []IPPolicy) {
	names := map[string]int{}
	for i, pol := range ps {
		p := idx("ipPolicies", i)
		v.listName(p+".name", "IP policy", pol.Name, names, i, "ipPolicies")
		v.addrs(p+".allow", pol.Allow)
		v.addrs(p+".deny", pol.Deny)
		apps := map[string]int{}
		for j, a := range pol.Apps {
			ap := idx(p+".apps", j)
			switch {
			case a.App == "":
				v.add(ap+".app", "required")
			case !v.apps[a.App]:
				v.add(ap+".app", "app %q is not defined in apps", a.App)
			default:
				if f, dup := firstIndex(apps, a.App, j); dup {
					v.add(ap+".app", "app %q is already listed at %s", a.App, idx(p+".apps", f))
				}
			}
			if len(a.Allow) == 0 {
				v.add(ap+".allow", "required (the addresses this app may call from)")
			}
			v.addrs(ap+".allow", a.Allow)
		}
	}
}

func (v *validator) backendKeySpecs(ks []BackendKey) {
	names := map[string]int{}
	keys := map[string]int{}
	for i, k := range ks {
		p := idx("backendKeys", i)
		v.listName(p+".name", "backend key", k.Name, names, i, "backendKeys")
		if k.Key == "" {
			v.add(p+".key", "required")
		} else if f, dup := firstIndex(keys, k.Key, i); dup {
			// The backend picks its secret by this key, so two entries cannot share it.
			v.add(p+".key", "key %q is already used by backendKeys[%d]", k.Key, f)
		}
		if k.Secret == "" {
			v.add(p+".secret", "required")
		}
	}
}

func (v *validator) certificates(cs []Certificate) {
	names := map[string]int{}
	for i, c := range cs {
		p := idx("certificates", i)
		v.listName(p+".name", "certificate", c.Name, names, i, "certificates")
		switch {
		case c.Cert == "":
			v.add(p+".cert", "required (PEM)")
		case c.Key == "":
			v.add(p+".key", "required (PEM)")
		default:
			if _, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key)); err != nil {
				v.add(p+".cert", "cert and key are not a PEM pair: %v", err)
			}
		}
		if len(c.Domains) == 0 {
			v.add(p+".domains", "required (the names this certificate is served for)")
		}
		for j, d := range c.Domains {
			if msg := checkHostname(d, true); msg != "" {
				v.add(idx(p+".domains", j), "%s", msg)
			}
		}
	}
}
