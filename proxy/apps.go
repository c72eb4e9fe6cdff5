package proxy

import (
	"github.com/tollgate/tollgate/access"
	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// app is an fsm.App compiled for the data plane: its secrets as signature.Secrets
// (HMAC states precomputed) and its grants indexed by API, so the auth and grant
// stages answer with two map reads and no allocation.
//
// Apps, grants, backend keys and IP policies live outside the API versions, so they are
// compiled into the table (one per config version), not into routes: a route compiled
// for an earlier table can be reused, and a stage still reads the current apps and
// grants through Call.table. A revoked grant or a disabled app therefore stops calls on
// the first request that loads the table of the commit that changed it.
type app struct {
	name     string
	owner    string // the user its calls count against in traffic policies
	nameB    []byte // CaAppId
	keyB     []byte // CaAppKey
	secrets  []*signature.Secret
	disabled bool
	grants   map[string]grant // by API ref (GROUP/API)
}

// grant is one app's grant of one API: the stages it covers (bit i for fsm.Stages[i])
// and when it expires (Unix nanoseconds; 0 never).
type grant struct {
	stages  uint8
	expires int64
}

// covers reports whether the grant lets the app call in stage si at now (Unix ns).
func (g grant) covers(si int, now int64) (inStage, live bool) {
	return g.stages&(1<<si) != 0, g.expires == 0 || now < g.expires
}

// compileState compiles the parts of s that routes reach through their table: apps by
// key and by code, grants, backend keys and IP policies. Problems are reported through
// b and leave the faulty item out, which refuses its calls rather than letting them in.
func (b *builder) compileState(t *table, s *fsm.State) {
	t.apps = make(map[string]*app, len(s.Apps))
	t.codes = make(map[string]*app, len(s.Apps))
	byName := make(map[string]*app, len(s.Apps))
	for _, name := range fsm.SortedKeys(s.Apps) {
		a := s.Apps[name]
		ca := &app{name: a.Name, owner: a.Owner, nameB: []byte(a.Name), keyB: []byte(a.Key), disabled: a.Disabled,
			grants: map[string]grant{}}
		if ca.name == "" {
			ca.name, ca.nameB = name, []byte(name)
		}
		for _, sec := range a.Secrets {
			if sec != "" {
				ca.secrets = append(ca.secrets, signature.NewSecret(sec))
			}
		}
		byName[name] = ca
		if a.Key != "" {
			if prev := t.apps[a.Key]; prev != nil {
				b.problem("apps %s and %s share an AppKey; %s keeps it", prev.name, ca.name, prev.name)
			} else {
				t.apps[a.Key] = ca
			}
		}
		if a.Code != "" {
			if prev := t.codes[a.Code]; prev != nil {
				b.problem("apps %s and %s share an AppCode; %s keeps it", prev.name, ca.name, prev.name)
			} else {
				t.codes[a.Code] = ca
			}
		}
	}
	for _, k := range fsm.SortedKeys(s.Grants) {
		g := s.Grants[k]
		a := byName[g.App]
		if a == nil {
			continue // fsm refuses such grants; nothing to authorize
		}
		var cg grant
		for _, st := range g.Stages {
			if i := st.Index(); i >= 0 {
				cg.stages |= 1 << i
			}
		}
		if g.Expires != nil {
			cg.expires = g.Expires.UnixNano()
			if cg.expires == 0 {
				cg.expires = 1 // expired at the epoch, not "never"
			}
		}
		a.grants[g.API] = cg
	}

	t.backendKeys = make(map[string]*signature.BackendKey, len(s.BackendKeys))
	for name, k := range s.BackendKeys {
		if k.Key == "" || k.Secret == "" {
			b.problem("backend key %s has no key or no secret; APIs signing with it answer %s", name, ErrInternal.Code)
			continue
		}
		t.backendKeys[name] = signature.NewBackendKey(k.Key, k.Secret)
	}

	t.ipPolicies = make(map[string]*access.IPRules, len(s.IPPolicies))
	for _, name := range fsm.SortedKeys(s.IPPolicies) {
		pol := s.IPPolicies[name]
		r, err := access.CompileIPPolicy(&pol)
		if err != nil {
			b.problem("%v; APIs using it answer %s", err, ErrInternal.Code)
			continue
		}
		t.ipPolicies[name] = r
	}
}
