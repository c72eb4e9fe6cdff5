package fsm

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Change is one line of a plan: what an apply creates, changes, deletes or deploys.
type Change struct {
	Action string `json:"action"` // create | update | delete | deploy | undeploy
	Kind   string `json:"kind"`   // group | api | app | grant | traffic | ipPolicy | backendKey | certificate
	Name   string `json:"name"`
	Detail string `json:"detail,omitempty"`
}

func (c Change) String() string {
	s := fmt.Sprintf("%-8s %-11s %s", c.Action, c.Kind, c.Name)
	if c.Detail != "" {
		s += "  (" + c.Detail + ")"
	}
	return s
}

// Plan lists what an apply changes, in a stable order.
type Plan struct {
	Changes []Change `json:"changes"`
}

// Empty reports whether the apply changes nothing.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

func (p *Plan) add(action, kind, name, detail string) {
	p.Changes = append(p.Changes, Change{Action: action, Kind: kind, Name: name, Detail: detail})
}

// DeployResult is the response of deploy and rollback: the version now served.
type DeployResult struct {
	API     string `json:"api"`
	Stage   Stage  `json:"stage"`
	Version int    `json:"version"`
}

// sameJSON compares two values by their JSON form, where a nil and an empty slice are
// the same (every optional field is omitempty).
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// syncNamed makes have match want for one kind of named resource and records the plan.
func syncNamed[V any](p *Plan, kind string, have map[string]V, want map[string]V) {
	for _, name := range SortedKeys(want) {
		old, ok := have[name]
		switch {
		case !ok:
			p.add("create", kind, name, "")
		case !sameJSON(old, want[name]):
			p.add("update", kind, name, "")
		default:
			continue
		}
		have[name] = want[name]
	}
	for _, name := range SortedKeys(have) {
		if _, ok := want[name]; !ok {
			p.add("delete", kind, name, "")
			delete(have, name)
		}
	}
}

func applyBundle(next *State, cmd *ApplyBundle) (any, error) {
	b := &cmd.Bundle
	if err := b.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{}

	groups := map[string]Group{}
	apis := map[string]API{}
	for _, g := range b.Groups {
		groups[g.Name] = Group{Name: g.Name, Description: g.Description, Domains: g.Domains}
		for _, a := range g.APIs {
			apis[APIRef(g.Name, a.Name)] = API{Group: g.Name, Name: a.Name, Def: a.APIDef}
		}
	}
	syncNamed(p, "group", next.Groups, groups)
	syncNamed(p, "api", next.APIs, apis)

	// Deployments follow the APIs: a deleted API takes its history with it.
	for _, key := range SortedKeys(next.Deployments) {
		if _, ok := apis[next.Deployments[key].API]; !ok {
			delete(next.Deployments, key)
		}
	}
	for _, g := range b.Groups {
		for _, a := range g.APIs {
			if a.Deploy == nil {
				continue
			}
			ref := APIRef(g.Name, a.Name)
			for _, st := range Stages {
				key := DeploymentKey(ref, st)
				d := next.Deployments[key]
				if slices.Contains(a.Deploy, st) {
					if cur, ok := d.Served(); ok && sameJSON(cur.Def, a.APIDef) {
						continue
					}
					d = newVersion(ref, st, d, a.APIDef, cmd.At, "apply")
					next.Deployments[key] = d
					p.add("deploy", "api", ref, fmt.Sprintf("%s v%d", st, d.Current))
				} else if d.Current > 0 {
					d.Current = 0
					next.Deployments[key] = d
					p.add("undeploy", "api", ref, string(st))
				}
			}
		}
	}

	apps := map[string]App{}
	for _, a := range b.Apps {
		app, err := resolveApp(next.Apps, a)
		if err != nil {
			return nil, err
		}
		apps[a.Name] = app
	}
	syncNamed(p, "app", next.Apps, apps)

	grants := map[string]GrantSpec{}
	for _, g := range b.Grants {
		grants[GrantKey(g.App, g.API)] = g
	}
	syncNamed(p, "grant", next.Grants, grants)
	syncNamed(p, "traffic", next.Traffic, keyed(b.Traffic, func(t TrafficSpec) string { return t.Name }))
	syncNamed(p, "ipPolicy", next.IPPolicies, keyed(b.IPPolicies, func(t IPPolicy) string { return t.Name }))
	syncNamed(p, "backendKey", next.BackendKeys, keyed(b.BackendKeys, func(t BackendKey) string { return t.Name }))
	syncNamed(p, "certificate", next.Certificates, keyed(b.Certificates, func(t Certificate) string { return t.Name }))
	sortPlan(p)
	return p, nil
}

// sortPlan orders a plan by kind as the file does, then by name, so it reads the same
// every time.
func sortPlan(p *Plan) {
	order := map[string]int{"group": 0, "api": 1, "app": 2, "grant": 3, "traffic": 4, "ipPolicy": 5, "backendKey": 6, "certificate": 7}
	sort.SliceStable(p.Changes, func(i, j int) bool {
		a, b := p.Changes[i], p.Changes[j]
		if order[a.Kind] != order[b.Kind] {
			return order[a.Kind] < order[b.Kind]
		}
		return a.Name < b.Name
	})
}

// resolveApp turns an app of the file into the stored app. Credentials the file leaves
// out are kept from the existing app, or taken from those the proposer generated. A new
// secret in the file rotates: the previous one stays live beside it.
func resolveApp(have map[string]App, a AppSpec) (App, error) {
	old, exists := have[a.Name]
	app := App{Name: a.Name, Owner: a.Owner, Disabled: a.Disabled}
	gen := a.Generated
	if !exists && gen == nil && (a.Key == "" || a.Secret == "" || a.Code == "") {
		return App{}, fmt.Errorf("app %q: no credentials given or generated: %w", a.Name, ErrInvalid)
	}
	pick := func(given, kept, generated string) string {
		switch {
		case given != "":
			return given
		case exists:
			return kept
		default:
			return generated
		}
	}
	var gk, gs, gc string
	if gen != nil {
		gk, gs, gc = gen.Key, gen.Secret, gen.Code
	}
	var oldSecret string
	if exists && len(old.Secrets) > 0 {
		oldSecret = old.Secrets[0]
	}
	app.Key = pick(a.Key, old.Key, gk)
	app.Code = pick(a.Code, old.Code, gc)
	secret := pick(a.Secret, oldSecret, gs)
	switch {
	case !exists:
		app.Secrets = []string{secret}
	case secret == oldSecret:
		app.Secrets = old.Secrets
	default:
		app.Secrets = []string{secret, oldSecret}
	}
	return app, nil
}

func newVersion(ref string, st Stage, d Deployment, def APIDef, at time.Time, note string) Deployment {
	n := len(d.Versions) + 1
	versions := make([]Version, len(d.Versions), n)
	copy(versions, d.Versions)
	versions = append(versions, Version{Number: n, Def: def, DeployedAt: at.UTC(), Note: note})
	return Deployment{API: ref, Stage: st, Current: n, Versions: versions}
}

func checkTarget(next *State, ref string, st Stage) error {
	if !st.Valid() {
		return fmt.Errorf("unknown stage %q (want TEST, PRE or RELEASE): %w", st, ErrInvalid)
	}
	if _, ok := next.APIs[ref]; !ok {
		return fmt.Errorf("API %s: %w", ref, ErrNotFound)
	}
	return nil
}

func applyDeploy(next *State, cmd *Deploy) (any, error) {
	if err := checkTarget(next, cmd.API, cmd.Stage); err != nil {
		return nil, err
	}
	key := DeploymentKey(cmd.API, cmd.Stage)
	note := strings.TrimSpace(cmd.Note)
	if note == "" {
		note = "deploy"
	}
	d := newVersion(cmd.API, cmd.Stage, next.Deployments[key], next.APIs[cmd.API].Def, cmd.At, note)
	next.Deployments[key] = d
	return &DeployResult{API: cmd.API, Stage: cmd.Stage, Version: d.Current}, nil
}

func applyUndeploy(next *State, cmd *Undeploy) (any, error) {
	if err := checkTarget(next, cmd.API, cmd.Stage); err != nil {
		return nil, err
	}
	key := DeploymentKey(cmd.API, cmd.Stage)
	d, ok := next.Deployments[key]
	if !ok || d.Current == 0 {
		return nil, fmt.Errorf("API %s is not deployed in %s: %w", cmd.API, cmd.Stage, ErrInvalid)
	}
	d.Current = 0
	next.Deployments[key] = d
	return &DeployResult{API: cmd.API, Stage: cmd.Stage}, nil
}

func applyRollback(next *State, cmd *Rollback) (any, error) {
	if err := checkTarget(next, cmd.API, cmd.Stage); err != nil {
		return nil, err
	}
	key := DeploymentKey(cmd.API, cmd.Stage)
	d := next.Deployments[key]
	if cmd.Version < 1 || cmd.Version > len(d.Versions) {
		return nil, fmt.Errorf("API %s has no version %d in %s (it has %d): %w", cmd.API, cmd.Version, cmd.Stage, len(d.Versions), ErrInvalid)
	}
	d.Current = cmd.Version
	next.Deployments[key] = d
	return &DeployResult{API: cmd.API, Stage: cmd.Stage, Version: d.Current}, nil
}

func applyInitCluster(next *State, cmd *InitCluster) (any, error) {
	if next.ClusterSecret == "" {
		next.ClusterSecret = cmd.Secret
	}
	return nil, nil
}

func applyGrant(next *State, cmd *Grant) (any, error) {
	g := cmd.Grant
	if _, ok := next.Apps[g.App]; !ok {
		return nil, fmt.Errorf("app %q: %w", g.App, ErrNotFound)
	}
	if _, ok := next.APIs[g.API]; !ok {
		return nil, fmt.Errorf("API %s: %w", g.API, ErrNotFound)
	}
	if len(g.Stages) == 0 {
		return nil, fmt.Errorf("a grant needs at least one stage: %w", ErrInvalid)
	}
	for _, st := range g.Stages {
		if !st.Valid() {
			return nil, fmt.Errorf("unknown stage %q (want TEST, PRE or RELEASE): %w", st, ErrInvalid)
		}
	}
	next.Grants[GrantKey(g.App, g.API)] = g
	return &g, nil
}

func applyRevoke(next *State, cmd *Revoke) (any, error) {
	key := GrantKey(cmd.App, cmd.API)
	if _, ok := next.Grants[key]; !ok {
		return nil, fmt.Errorf("app %q holds no grant for %s: %w", cmd.App, cmd.API, ErrNotFound)
	}
	delete(next.Grants, key)
	return nil, nil
}

func applyRotateSecret(next *State, cmd *RotateSecret) (any, error) {
	app, ok := next.Apps[cmd.App]
	if !ok {
		return nil, fmt.Errorf("app %q: %w", cmd.App, ErrNotFound)
	}
	if len(cmd.Secret) < 16 {
		return nil, fmt.Errorf("a secret needs at least 16 characters: %w", ErrInvalid)
	}
	secrets := []string{cmd.Secret}
	if len(app.Secrets) > 0 {
		secrets = append(secrets, app.Secrets[0])
	}
	app.Secrets = secrets
	next.Apps[cmd.App] = app
	return &app, nil
}

func applySetAppState(next *State, cmd *SetAppState) (any, error) {
	app, ok := next.Apps[cmd.App]
	if !ok {
		return nil, fmt.Errorf("app %q: %w", cmd.App, ErrNotFound)
	}
	app.Disabled = cmd.Disabled
	next.Apps[cmd.App] = app
	return &app, nil
}
