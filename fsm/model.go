package fsm

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Stage is an environment an API is deployed to.
type Stage string

// The stages, in promotion order.
const (
	StageTest    Stage = "TEST"
	StagePre     Stage = "PRE"
	StageRelease Stage = "RELEASE"
)

// Stages lists every known stage in promotion order. Its index is the stage's slot in
// the compiled routing table.
var Stages = [...]Stage{StageTest, StagePre, StageRelease}

// Index returns the stage's position in Stages, or -1 when the stage is unknown.
func (s Stage) Index() int {
	for i, k := range Stages {
		if k == s {
			return i
		}
	}
	return -1
}

// Valid reports whether s is a known stage.
func (s Stage) Valid() bool { return s.Index() >= 0 }

// ParseStage accepts a stage name in any case.
func ParseStage(s string) (Stage, error) {
	st := Stage(strings.ToUpper(strings.TrimSpace(s)))
	if !st.Valid() {
		return "", fmt.Errorf("unknown stage %q (want TEST, PRE or RELEASE)", s)
	}
	return st, nil
}

// Auth modes of an API.
const (
	AuthApp       = "app"
	AuthAppCode   = "appcode"
	AuthJWT       = "jwt"
	AuthAnonymous = "anonymous"
)

// Backend types.
const (
	BackendHTTP = "http"
	BackendMock = "mock"
)

// Parameter locations.
const (
	InPath   = "path"
	InQuery  = "query"
	InHeader = "header"
	InForm   = "form"
)

// Traffic windows.
const (
	WindowMinute = "minute"
	WindowHour   = "hour"
	WindowDay    = "day"
)

// Duration is a time.Duration written as "3s" in files and JSON, and as nanoseconds in
// msgpack.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a Go duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: want a string like \"3s\"")
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like 3s or 500ms", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, like 3s or 500ms", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// JSONDoc is a JSON document (a JSON Schema) kept as canonical JSON text, so that it
// encodes the same way every time and compares by value.
type JSONDoc string

// UnmarshalYAML converts a YAML mapping to canonical JSON.
func (j *JSONDoc) UnmarshalYAML(n *yaml.Node) error {
	var v any
	if err := n.Decode(&v); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("not representable as JSON: %v", err)
	}
	*j = JSONDoc(b)
	return nil
}

// MarshalYAML writes the document back as a YAML mapping.
func (j JSONDoc) MarshalYAML() (any, error) {
	var v any
	if err := json.Unmarshal([]byte(j), &v); err != nil {
		return nil, err
	}
	return v, nil
}

// MarshalJSON writes the document as JSON, not as a string.
func (j JSONDoc) MarshalJSON() ([]byte, error) {
	if j == "" {
		return []byte("null"), nil
	}
	return []byte(j), nil
}

// UnmarshalJSON keeps the document in canonical form.
func (j *JSONDoc) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if v == nil {
		*j = ""
		return nil
	}
	c, err := json.Marshal(v)
	if err != nil {
		return err
	}
	*j = JSONDoc(c)
	return nil
}

// Bundle is the declarative file: the whole desired configuration. Applying a bundle
// makes the state match it in one command.
type Bundle struct {
	Groups       []GroupSpec   `json:"groups,omitempty" yaml:"groups,omitempty" msgpack:"groups"`
	Apps         []AppSpec     `json:"apps,omitempty" yaml:"apps,omitempty" msgpack:"apps"`
	Grants       []GrantSpec   `json:"grants,omitempty" yaml:"grants,omitempty" msgpack:"grants"`
	Traffic      []TrafficSpec `json:"traffic,omitempty" yaml:"traffic,omitempty" msgpack:"traffic"`
	IPPolicies   []IPPolicy    `json:"ipPolicies,omitempty" yaml:"ipPolicies,omitempty" msgpack:"ip_policies"`
	BackendKeys  []BackendKey  `json:"backendKeys,omitempty" yaml:"backendKeys,omitempty" msgpack:"backend_keys"`
	Certificates []Certificate `json:"certificates,omitempty" yaml:"certificates,omitempty" msgpack:"certificates"`
}

// GroupSpec is a group of APIs, reached at <name>.<base-domain> and its custom domains.
type GroupSpec struct {
	Name        string    `json:"name" yaml:"name" msgpack:"name"`
	Description string    `json:"description,omitempty" yaml:"description,omitempty" msgpack:"description"`
	Domains     []string  `json:"domains,omitempty" yaml:"domains,omitempty" msgpack:"domains"`
	APIs        []APISpec `json:"apis,omitempty" yaml:"apis,omitempty" msgpack:"apis"`
}

// APISpec is one API of a group as the file declares it: its definition plus the
// stages it should be deployed to.
type APISpec struct {
	Name   string `json:"name" yaml:"name" msgpack:"name"`
	APIDef `json:",inline" yaml:",inline" msgpack:",inline"`
	// Deploy lists the stages the API should serve in. Nil leaves the API's deployments
	// as they are; an empty list undeploys it everywhere.
	Deploy []Stage `json:"deploy,omitempty" yaml:"deploy,omitempty" msgpack:"deploy"`
}

// APIDef is the part of an API that is versioned: deploying it to a stage freezes a
// copy as a new version.
type APIDef struct {
	Description string    `json:"description,omitempty" yaml:"description,omitempty" msgpack:"description"`
	Method      string    `json:"method" yaml:"method" msgpack:"method"`
	Path        string    `json:"path" yaml:"path" msgpack:"path"`
	Auth        string    `json:"auth" yaml:"auth" msgpack:"auth"`
	Params      []Param   `json:"params,omitempty" yaml:"params,omitempty" msgpack:"params"`
	Body        *BodySpec `json:"body,omitempty" yaml:"body,omitempty" msgpack:"body"`
	// Passthrough forwards parameters the API does not declare.
	Passthrough bool     `json:"passthrough,omitempty" yaml:"passthrough,omitempty" msgpack:"passthrough"`
	Backend     Backend  `json:"backend" yaml:"backend" msgpack:"backend"`
	Traffic     string   `json:"traffic,omitempty" yaml:"traffic,omitempty" msgpack:"traffic"`
	IPPolicy    string   `json:"ipPolicy,omitempty" yaml:"ipPolicy,omitempty" msgpack:"ip_policy"`
	Guard       []string `json:"guard,omitempty" yaml:"guard,omitempty" msgpack:"guard"`
	JWT         *JWTSpec `json:"jwt,omitempty" yaml:"jwt,omitempty" msgpack:"jwt"`
}

// Param is a declared request parameter and the rules it must satisfy.
type Param struct {
	Name      string   `json:"name" yaml:"name" msgpack:"name"`
	In        string   `json:"in" yaml:"in" msgpack:"in"`
	Type      string   `json:"type,omitempty" yaml:"type,omitempty" msgpack:"type"`
	Items     string   `json:"items,omitempty" yaml:"items,omitempty" msgpack:"items"`
	Required  bool     `json:"required,omitempty" yaml:"required,omitempty" msgpack:"required"`
	Default   *string  `json:"default,omitempty" yaml:"default,omitempty" msgpack:"default"`
	Min       *float64 `json:"min,omitempty" yaml:"min,omitempty" msgpack:"min"`
	Max       *float64 `json:"max,omitempty" yaml:"max,omitempty" msgpack:"max"`
	MinLength *int     `json:"minLength,omitempty" yaml:"minLength,omitempty" msgpack:"min_length"`
	MaxLength *int     `json:"maxLength,omitempty" yaml:"maxLength,omitempty" msgpack:"max_length"`
	Enum      []string `json:"enum,omitempty" yaml:"enum,omitempty" msgpack:"enum"`
	Regex     string   `json:"regex,omitempty" yaml:"regex,omitempty" msgpack:"regex"`
}

// BodySpec constrains a JSON request body.
type BodySpec struct {
	Schema JSONDoc `json:"schema,omitempty" yaml:"schema,omitempty" msgpack:"schema"`
}

// Backend is where an API's calls go and how they are converted on the way.
type Backend struct {
	Type    string   `json:"type" yaml:"type" msgpack:"type"`
	URL     string   `json:"url,omitempty" yaml:"url,omitempty" msgpack:"url"`
	Method  string   `json:"method,omitempty" yaml:"method,omitempty" msgpack:"method"`
	Path    string   `json:"path,omitempty" yaml:"path,omitempty" msgpack:"path"`
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty" msgpack:"timeout"`
	// CA is a PEM bundle that verifies an https backend; empty uses the system roots.
	CA        string          `json:"ca,omitempty" yaml:"ca,omitempty" msgpack:"ca"`
	Map       []ParamMapping  `json:"map,omitempty" yaml:"map,omitempty" msgpack:"map"`
	Constants []ConstantParam `json:"constants,omitempty" yaml:"constants,omitempty" msgpack:"constants"`
	System    []SystemParam   `json:"system,omitempty" yaml:"system,omitempty" msgpack:"system"`
	Signature string          `json:"signature,omitempty" yaml:"signature,omitempty" msgpack:"signature"`

	// Mock backends answer from the gateway itself.
	Status  int               `json:"status,omitempty" yaml:"status,omitempty" msgpack:"status"`
	Body    string            `json:"body,omitempty" yaml:"body,omitempty" msgpack:"body"`
	Headers map[string]string `json:"headers,omitempty" yaml:"headers,omitempty" msgpack:"headers"`
	Delay   Duration          `json:"delay,omitempty" yaml:"delay,omitempty" msgpack:"delay"`
}

// ParamMapping sends a frontend parameter to the backend under another name or place.
type ParamMapping struct {
	Param string `json:"param" yaml:"param" msgpack:"param"`
	In    string `json:"in" yaml:"in" msgpack:"in"`
	Name  string `json:"name" yaml:"name" msgpack:"name"`
}

// ConstantParam is a fixed value the gateway adds to every backend call.
type ConstantParam struct {
	Name  string `json:"name" yaml:"name" msgpack:"name"`
	In    string `json:"in" yaml:"in" msgpack:"in"`
	Value string `json:"value" yaml:"value" msgpack:"value"`
}

// SystemParam passes a gateway-known value (CaClientIp, CaRequestId...) to the backend.
type SystemParam struct {
	Param string `json:"param" yaml:"param" msgpack:"param"`
	In    string `json:"in" yaml:"in" msgpack:"in"`
	Name  string `json:"name" yaml:"name" msgpack:"name"`
}

// JWTSpec configures auth: jwt for an API.
type JWTSpec struct {
	// From is where the token is read: header:NAME, query:NAME or cookie:NAME.
	From      string         `json:"from,omitempty" yaml:"from,omitempty" msgpack:"from"`
	Keys      []JWTKey       `json:"keys,omitempty" yaml:"keys,omitempty" msgpack:"keys"`
	JWKS      JSONDoc        `json:"jwks,omitempty" yaml:"jwks,omitempty" msgpack:"jwks"`
	Issuer    string         `json:"issuer,omitempty" yaml:"issuer,omitempty" msgpack:"issuer"`
	Audience  string         `json:"audience,omitempty" yaml:"audience,omitempty" msgpack:"audience"`
	Claims    []ClaimToParam `json:"claims,omitempty" yaml:"claims,omitempty" msgpack:"claims"`
	SingleUse bool           `json:"singleUse,omitempty" yaml:"singleUse,omitempty" msgpack:"single_use"`
}

// JWTKey is one verification key: a shared secret for HS256 or a PEM public key.
type JWTKey struct {
	Alg    string `json:"alg" yaml:"alg" msgpack:"alg"`
	Kid    string `json:"kid,omitempty" yaml:"kid,omitempty" msgpack:"kid"`
	Secret string `json:"secret,omitempty" yaml:"secret,omitempty" msgpack:"secret"`
	PEM    string `json:"pem,omitempty" yaml:"pem,omitempty" msgpack:"pem"`
}

// ClaimToParam passes a token claim to the backend.
type ClaimToParam struct {
	Claim string `json:"claim" yaml:"claim" msgpack:"claim"`
	In    string `json:"in" yaml:"in" msgpack:"in"`
	Name  string `json:"name" yaml:"name" msgpack:"name"`
}

// AppSpec is a consumer application. Key, secret and code are generated when not given.
type AppSpec struct {
	Name     string `json:"name" yaml:"name" msgpack:"name"`
	Owner    string `json:"owner,omitempty" yaml:"owner,omitempty" msgpack:"owner"`
	Key      string `json:"key,omitempty" yaml:"key,omitempty" msgpack:"key"`
	Secret   string `json:"secret,omitempty" yaml:"secret,omitempty" msgpack:"secret"`
	Code     string `json:"code,omitempty" yaml:"code,omitempty" msgpack:"code"`
	Disabled bool   `json:"disabled,omitempty" yaml:"disabled,omitempty" msgpack:"disabled"`
	// Generated holds credentials drawn by the proposing node for an app the state does
	// not have yet; Apply uses them only then, so it stays deterministic.
	Generated *Credentials `json:"-" yaml:"-" msgpack:"generated"`
}

// Credentials are an app's key, secret and code.
type Credentials struct {
	Key    string `json:"key" msgpack:"key"`
	Secret string `json:"secret" msgpack:"secret"`
	Code   string `json:"code" msgpack:"code"`
}

// GrantSpec authorizes an app to call an API (GROUP/API) in some stages.
type GrantSpec struct {
	App     string     `json:"app" yaml:"app" msgpack:"app"`
	API     string     `json:"api" yaml:"api" msgpack:"api"`
	Stages  []Stage    `json:"stages,omitempty" yaml:"stages,omitempty" msgpack:"stages"`
	Expires *time.Time `json:"expires,omitempty" yaml:"expires,omitempty" msgpack:"expires"`
}

// TrafficSpec is a traffic policy: quotas per API, app and user in a window.
type TrafficSpec struct {
	Name    string           `json:"name" yaml:"name" msgpack:"name"`
	Window  string           `json:"window" yaml:"window" msgpack:"window"`
	API     int64            `json:"api,omitempty" yaml:"api,omitempty" msgpack:"api"`
	App     int64            `json:"app,omitempty" yaml:"app,omitempty" msgpack:"app"`
	User    int64            `json:"user,omitempty" yaml:"user,omitempty" msgpack:"user"`
	Special []TrafficSpecial `json:"special,omitempty" yaml:"special,omitempty" msgpack:"special"`
}

// TrafficSpecial overrides a traffic limit for one app or one user.
type TrafficSpecial struct {
	App   string `json:"app,omitempty" yaml:"app,omitempty" msgpack:"app"`
	User  string `json:"user,omitempty" yaml:"user,omitempty" msgpack:"user"`
	Limit int64  `json:"limit" yaml:"limit" msgpack:"limit"`
}

// IPPolicy allows or denies client addresses (CIDRs, IPv4 and IPv6), optionally per app.
type IPPolicy struct {
	Name  string        `json:"name" yaml:"name" msgpack:"name"`
	Allow []string      `json:"allow,omitempty" yaml:"allow,omitempty" msgpack:"allow"`
	Deny  []string      `json:"deny,omitempty" yaml:"deny,omitempty" msgpack:"deny"`
	Apps  []IPAppPolicy `json:"apps,omitempty" yaml:"apps,omitempty" msgpack:"apps"`
}

// IPAppPolicy restricts one app to some addresses.
type IPAppPolicy struct {
	App   string   `json:"app" yaml:"app" msgpack:"app"`
	Allow []string `json:"allow" yaml:"allow" msgpack:"allow"`
}

// BackendKey signs what the gateway forwards, so a backend can tell a call came
// through it.
type BackendKey struct {
	Name   string `json:"name" yaml:"name" msgpack:"name"`
	Key    string `json:"key" yaml:"key" msgpack:"key"`
	Secret string `json:"secret,omitempty" yaml:"secret,omitempty" msgpack:"secret"`
}

// Certificate is a TLS certificate served for its domains (chosen by SNI).
type Certificate struct {
	Name    string   `json:"name" yaml:"name" msgpack:"name"`
	Cert    string   `json:"cert" yaml:"cert" msgpack:"cert"`
	Key     string   `json:"key,omitempty" yaml:"key,omitempty" msgpack:"key"`
	Domains []string `json:"domains,omitempty" yaml:"domains,omitempty" msgpack:"domains"`
}

// APIRef names an API as GROUP/API.
func APIRef(group, api string) string { return group + "/" + api }

// SplitAPIRef splits GROUP/API.
func SplitAPIRef(ref string) (group, api string, ok bool) {
	group, api, ok = strings.Cut(ref, "/")
	return group, api, ok && group != "" && api != "" && !strings.Contains(api, "/")
}

// Group is a group in the state.
type Group struct {
	Name        string   `json:"name" msgpack:"name"`
	Description string   `json:"description,omitempty" msgpack:"description"`
	Domains     []string `json:"domains,omitempty" msgpack:"domains"`
}

// API is an API in the state: its current (not yet deployed) definition.
type API struct {
	Group string `json:"group" msgpack:"group"`
	Name  string `json:"name" msgpack:"name"`
	Def   APIDef `json:"def" msgpack:"def"`
}

// Ref returns GROUP/API.
func (a API) Ref() string { return APIRef(a.Group, a.Name) }

// App is a consumer application with its credentials. Secrets holds one or two live
// secrets: the newest first, the previous one kept during a rotation.
type App struct {
	Name     string   `json:"name" msgpack:"name"`
	Owner    string   `json:"owner,omitempty" msgpack:"owner"`
	Key      string   `json:"key" msgpack:"key"`
	Secrets  []string `json:"secrets" msgpack:"secrets"`
	Code     string   `json:"code" msgpack:"code"`
	Disabled bool     `json:"disabled,omitempty" msgpack:"disabled"`
}

// Version is one immutable deployed definition of an API in a stage.
type Version struct {
	Number     int       `json:"version" msgpack:"number"`
	Def        APIDef    `json:"def" msgpack:"def"`
	DeployedAt time.Time `json:"deployedAt" msgpack:"deployed_at"`
	Note       string    `json:"note,omitempty" msgpack:"note"`
}

// Deployment is an API's history in one stage and the version it serves (0: none).
type Deployment struct {
	API      string    `json:"api" msgpack:"api"`
	Stage    Stage     `json:"stage" msgpack:"stage"`
	Current  int       `json:"current" msgpack:"current"`
	Versions []Version `json:"versions" msgpack:"versions"`
}

// Served returns the version the stage serves, if any.
func (d Deployment) Served() (Version, bool) {
	if d.Current <= 0 || d.Current > len(d.Versions) {
		return Version{}, false
	}
	return d.Versions[d.Current-1], true
}

// DeploymentKey names an API's deployment in a stage.
func DeploymentKey(apiRef string, stage Stage) string { return apiRef + "@" + string(stage) }

// GrantKey names a grant of an API to an app.
func GrantKey(app, apiRef string) string { return app + "|" + apiRef }

// State is the whole replicated configuration at one raft index. A published State is
// never modified: Apply copies it, changes the copy and swaps it in.
type State struct {
	Index        uint64                 `json:"index" msgpack:"index"`
	Groups       map[string]Group       `json:"groups" msgpack:"groups"`
	APIs         map[string]API         `json:"apis" msgpack:"apis"`
	Deployments  map[string]Deployment  `json:"deployments" msgpack:"deployments"`
	Apps         map[string]App         `json:"apps" msgpack:"apps"`
	Grants       map[string]GrantSpec   `json:"grants" msgpack:"grants"`
	Traffic      map[string]TrafficSpec `json:"traffic" msgpack:"traffic"`
	IPPolicies   map[string]IPPolicy    `json:"ipPolicies" msgpack:"ip_policies"`
	BackendKeys  map[string]BackendKey  `json:"backendKeys" msgpack:"backend_keys"`
	Certificates map[string]Certificate `json:"certificates" msgpack:"certificates"`
	// ClusterSecret authenticates calls between nodes (a follower forwarding a write to
	// the leader). Drawn once by the first leader; never shown by the admin API.
	ClusterSecret string `json:"-" msgpack:"cluster_secret"`
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		Groups:       map[string]Group{},
		APIs:         map[string]API{},
		Deployments:  map[string]Deployment{},
		Apps:         map[string]App{},
		Grants:       map[string]GrantSpec{},
		Traffic:      map[string]TrafficSpec{},
		IPPolicies:   map[string]IPPolicy{},
		BackendKeys:  map[string]BackendKey{},
		Certificates: map[string]Certificate{},
	}
}

// clone copies the maps so the copy can change without touching s. Values are copied;
// slices inside them are shared and must be replaced, never modified in place.
func (s *State) clone() *State {
	n := &State{
		Index:        s.Index,
		Groups:       cloneMap(s.Groups),
		APIs:         cloneMap(s.APIs),
		Deployments:  cloneMap(s.Deployments),
		Apps:         cloneMap(s.Apps),
		Grants:       cloneMap(s.Grants),
		Traffic:      cloneMap(s.Traffic),
		IPPolicies:   cloneMap(s.IPPolicies),
		BackendKeys:  cloneMap(s.BackendKeys),
		Certificates: cloneMap(s.Certificates),

		ClusterSecret: s.ClusterSecret,
	}
	return n
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// SortedKeys returns m's keys in order, for deterministic output.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Served returns the definition an API serves in a stage, if deployed.
func (s *State) Served(apiRef string, stage Stage) (Version, bool) {
	d, ok := s.Deployments[DeploymentKey(apiRef, stage)]
	if !ok {
		return Version{}, false
	}
	return d.Served()
}
