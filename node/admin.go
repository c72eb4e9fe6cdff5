package node

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tollgate/tollgate/cluster"
	"github.com/tollgate/tollgate/fsm"
)

// maxAdminBody bounds what one admin request may send: a bundle of 10,000 APIs is a
// few MiB.
const maxAdminBody = 64 << 20

// writeTimeout bounds how long an admin write waits for raft to commit it.
const writeTimeout = 10 * time.Second

// APIError is the JSON error every admin endpoint answers with.
type APIError struct {
	Status  int              `json:"status"`
	Message string           `json:"message"`
	Fields  []fsm.FieldError `json:"fields,omitempty"`
}

func (e *APIError) Error() string { return e.Message }

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !n.Ready() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		// Ready without a leader: serving the last config (or, restarted without a
		// quorum, its own snapshot and log), which writes cannot change. Still ready, so
		// a load balancer keeps the data plane in use; the header says it is stale.
		switch addr, _ := n.raft.LeaderWithID(); {
		case n.Provisional():
			w.Header().Set(staleHeader, "true")
			fmt.Fprintf(w, "ready (stale: no leader; serving this node's own snapshot and log, state index %d, not confirmed by a quorum)\n", n.State().Index)
		case addr == "":
			w.Header().Set(staleHeader, "true")
			fmt.Fprintf(w, "ready (stale: no leader; serving the last committed config, state index %d)\n", n.State().Index)
		default:
			w.Write([]byte("ready\n"))
		}
	})
	var metrics prometheus.Gatherer = n.reg
	if n.pool != nil {
		metrics = prometheus.Gatherers{n.reg, n.pool} // the workers' data plane and quotas
	}
	mux.Handle("GET /metrics", n.auth(promhttp.HandlerFor(metrics, promhttp.HandlerOpts{Registry: n.reg})))
	mux.Handle("/debug/pprof/", n.auth(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", n.auth(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", n.auth(http.HandlerFunc(pprof.Trace)))

	mux.HandleFunc("GET /v1/raft", n.raftStatus)
	api := func(pattern string, h func(*http.Request) (any, error)) {
		mux.Handle(pattern, n.auth(n.readHandler(jsonHandler(h))))
	}
	write := func(pattern string, h func(*http.Request) (any, error)) {
		mux.Handle(pattern, n.auth(n.writeHandler(jsonHandler(h))))
	}
	api("GET /v1/state", n.getState)
	write("POST /v1/apply", n.postApply)
	api("GET /v1/groups", n.listGroups)
	api("GET /v1/groups/{group}", n.getGroup)
	api("GET /v1/apis", n.listAPIs)
	api("GET /v1/apis/{group}/{api}", n.getAPI)
	write("POST /v1/apis/{group}/{api}/deploy", n.postDeploy)
	write("POST /v1/apis/{group}/{api}/undeploy", n.postUndeploy)
	write("POST /v1/apis/{group}/{api}/rollback", n.postRollback)
	api("GET /v1/apis/{group}/{api}/history", n.getHistory)
	api("GET /v1/apps", n.listApps)
	api("GET /v1/apps/{app}", n.getApp)
	api("GET /v1/grants", n.listGrants)
	write("POST /v1/grants", n.postGrant)
	write("DELETE /v1/grants/{app}/{group}/{api}", n.deleteGrant)
	write("POST /v1/apps/{app}/rotate", n.postRotate)
	write("POST /v1/apps/{app}/disable", n.postAppState(true))
	write("POST /v1/apps/{app}/enable", n.postAppState(false))
	api("GET /v1/members", n.listMembers)
	api("/v1/", func(r *http.Request) (any, error) {
		return nil, &APIError{Status: http.StatusNotFound, Message: fmt.Sprintf("no admin endpoint %s %s", r.Method, r.URL.Path)}
	})
	return mux
}

// auth requires the node's admin bearer token, or the cluster secret (which only nodes
// hold: a follower forwarding a write), compared in constant time.
func (n *Node) auth(h http.Handler) http.Handler {
	want := []byte("Bearer " + n.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		ok := subtle.ConstantTimeCompare(got, want) == 1
		if secret := n.fsm.State().ClusterSecret; !ok && secret != "" {
			ok = subtle.ConstantTimeCompare(got, []byte("Bearer "+secret)) == 1
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tollgate"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": &APIError{Status: 401,
				Message: "missing or wrong admin token: send Authorization: Bearer <token> (TOLLGATE_ADMIN_TOKEN, or the admin-token file in the node's data dir)"}})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// writeHandler sends a write to the leader when this node does not lead, and marks
// the answer of a write it applied with the raft index it applied at.
func (n *Node) writeHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
		if err != nil {
			writeJSON(w, 413, map[string]any{"error": &APIError{Status: 413, Message: "request body: " + err.Error()}})
			return
		}
		if n.raft.State() != raft.Leader && r.Header.Get(forwardedHeader) == "" {
			n.forward(w, r, body)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(indexWriter{w, n}, r)
	})
}

// indexWriter adds the FSM's applied index to a write's answer as it is sent: the index
// of a command at or after the write's own (raft's applied index can run ahead of the
// FSM, and may be a no-op a follower's FSM never sees).
type indexWriter struct {
	http.ResponseWriter
	n *Node
}

func (w indexWriter) WriteHeader(status int) {
	w.Header().Set(indexHeader, strconv.FormatUint(w.n.fsm.AppliedIndex(), 10))
	w.ResponseWriter.WriteHeader(status)
}

// readHandler serves reads from the local state. ?consistent=true makes the read
// linearizable: the leader confirms it still leads and has applied everything
// committed (a follower forwards the read to the leader). A node that knows no leader
// answers from its last state and marks the answer stale.
func (n *Node) readHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if consistent, _ := strconv.ParseBool(r.URL.Query().Get("consistent")); consistent {
			if n.raft.State() != raft.Leader {
				if r.Header.Get(forwardedHeader) != "" {
					writeJSON(w, 503, map[string]any{"error": &APIError{Status: 503, Message: "not the leader any more; retry"}})
					return
				}
				n.forward(w, r, nil)
				return
			}
			if err := n.raft.VerifyLeader().Error(); err != nil {
				e := toAPIError(err)
				writeJSON(w, e.Status, map[string]any{"error": e})
				return
			}
			if err := n.raft.Barrier(writeTimeout).Error(); err != nil {
				e := toAPIError(err)
				writeJSON(w, e.Status, map[string]any{"error": e})
				return
			}
		}
		if addr, _ := n.raft.LeaderWithID(); addr == "" {
			w.Header().Set(staleHeader, "true")
		}
		h.ServeHTTP(w, r)
	})
}

func jsonHandler(h func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		v, err := h(r)
		if err != nil {
			e := toAPIError(err)
			writeJSON(w, e.Status, map[string]any{"error": e})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func toAPIError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var ve *fsm.ValidationError
	if errors.As(err, &ve) {
		return &APIError{Status: http.StatusUnprocessableEntity, Message: err.Error(), Fields: ve.Errors}
	}
	switch {
	case errors.Is(err, fsm.ErrNotFound):
		return &APIError{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, fsm.ErrInvalid):
		return &APIError{Status: http.StatusBadRequest, Message: err.Error()}
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, raft.ErrNotLeader),
		errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		return &APIError{Status: http.StatusServiceUnavailable, Message: err.Error()}
	}
	return &APIError{Status: http.StatusInternalServerError, Message: err.Error()}
}

func badRequest(format string, args ...any) error {
	return &APIError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return badRequest("request body: %v", err)
	}
	return nil
}

// propose commits a command and waits until this node's data plane serves it.
func (n *Node) propose(t fsm.CommandType, body any) (any, error) {
	data, err := fsm.Encode(t, body)
	if err != nil {
		return nil, err
	}
	res, err := n.raft.Propose(data, writeTimeout)
	if err != nil {
		return nil, err
	}
	n.waitServed(n.fsm.State().Index, 2*time.Second)
	return res, nil
}

// ApplyResult is the answer of /v1/apply.
type ApplyResult struct {
	DryRun bool      `json:"dryRun"`
	Plan   *fsm.Plan `json:"plan"`
	Index  uint64    `json:"index"`
}

func (n *Node) postApply(r *http.Request) (any, error) {
	var b fsm.Bundle
	if err := decodeBody(r, &b); err != nil {
		return nil, err
	}
	// Credentials are drawn here, not in the FSM: Apply must be deterministic on every
	// node. The FSM keeps an existing app's credentials and uses these only for new ones.
	for i := range b.Apps {
		b.Apps[i].Generated = &fsm.Credentials{Key: randomDigits(9), Secret: randomHex(16), Code: randomHex(16)}
	}
	cmd := &fsm.ApplyBundle{Bundle: b, At: time.Now().UTC()}
	// The plan against this node's state; a bad bundle is refused here and never
	// enters the log (the FSM checks it again when it applies, on every node).
	plan, err := n.fsm.ApplyLocal(fsm.CmdApplyBundle, cmd)
	if err != nil {
		return nil, err
	}
	if dry, _ := strconv.ParseBool(r.URL.Query().Get("dryRun")); dry {
		return &ApplyResult{DryRun: true, Plan: plan.(*fsm.Plan), Index: n.fsm.State().Index}, nil
	}
	res, err := n.propose(fsm.CmdApplyBundle, cmd)
	if err != nil {
		return nil, err
	}
	return &ApplyResult{Plan: res.(*fsm.Plan), Index: n.fsm.State().Index}, nil
}

func (n *Node) getState(r *http.Request) (any, error) { return redactState(n.State()), nil }

func (n *Node) listGroups(r *http.Request) (any, error) {
	s := n.State()
	out := []fsm.Group{}
	for _, k := range fsm.SortedKeys(s.Groups) {
		out = append(out, s.Groups[k])
	}
	return out, nil
}

func (n *Node) getGroup(r *http.Request) (any, error) {
	g, ok := n.State().Groups[r.PathValue("group")]
	if !ok {
		return nil, &APIError{Status: 404, Message: fmt.Sprintf("group %q not found", r.PathValue("group"))}
	}
	return g, nil
}

// APIView is an API with what each stage serves.
type APIView struct {
	fsm.API
	Stages map[fsm.Stage]StageView `json:"stages"`
}

// StageView is an API's deployment in one stage.
type StageView struct {
	Current  int `json:"current"`
	Versions int `json:"versions"`
}

func apiView(s *fsm.State, a fsm.API) APIView {
	v := APIView{API: a, Stages: map[fsm.Stage]StageView{}}
	for _, st := range fsm.Stages {
		if d, ok := s.Deployments[fsm.DeploymentKey(a.Ref(), st)]; ok {
			v.Stages[st] = StageView{Current: d.Current, Versions: len(d.Versions)}
		}
	}
	return v
}

func (n *Node) listAPIs(r *http.Request) (any, error) {
	s := n.State()
	group := r.URL.Query().Get("group")
	out := []APIView{}
	for _, k := range fsm.SortedKeys(s.APIs) {
		if a := s.APIs[k]; group == "" || a.Group == group {
			out = append(out, apiView(s, a))
		}
	}
	return out, nil
}

func (n *Node) apiRef(r *http.Request) (string, error) {
	ref := fsm.APIRef(r.PathValue("group"), r.PathValue("api"))
	if _, ok := n.State().APIs[ref]; !ok {
		return "", &APIError{Status: 404, Message: fmt.Sprintf("API %s not found", ref)}
	}
	return ref, nil
}

func (n *Node) getAPI(r *http.Request) (any, error) {
	ref, err := n.apiRef(r)
	if err != nil {
		return nil, err
	}
	s := n.State()
	return apiView(s, s.APIs[ref]), nil
}

// StageRequest is the body of deploy, undeploy and rollback.
type StageRequest struct {
	Stage   string `json:"stage"`
	Note    string `json:"note,omitempty"`
	Version int    `json:"version,omitempty"`
}

func (n *Node) stageRequest(r *http.Request) (string, fsm.Stage, StageRequest, error) {
	var req StageRequest
	ref, err := n.apiRef(r)
	if err != nil {
		return "", "", req, err
	}
	if err := decodeBody(r, &req); err != nil {
		return "", "", req, err
	}
	st, err := fsm.ParseStage(req.Stage)
	if err != nil {
		return "", "", req, badRequest("%v", err)
	}
	return ref, st, req, nil
}

func (n *Node) postDeploy(r *http.Request) (any, error) {
	ref, st, req, err := n.stageRequest(r)
	if err != nil {
		return nil, err
	}
	return n.propose(fsm.CmdDeploy, &fsm.Deploy{API: ref, Stage: st, Note: req.Note, At: time.Now().UTC()})
}

func (n *Node) postUndeploy(r *http.Request) (any, error) {
	ref, st, _, err := n.stageRequest(r)
	if err != nil {
		return nil, err
	}
	return n.propose(fsm.CmdUndeploy, &fsm.Undeploy{API: ref, Stage: st})
}

func (n *Node) postRollback(r *http.Request) (any, error) {
	ref, st, req, err := n.stageRequest(r)
	if err != nil {
		return nil, err
	}
	if req.Version < 1 {
		return nil, badRequest("rollback needs a version (1 or more)")
	}
	return n.propose(fsm.CmdRollback, &fsm.Rollback{API: ref, Stage: st, Version: req.Version})
}

// HistoryView lists an API's versions in a stage.
type HistoryView struct {
	API      string        `json:"api"`
	Stage    fsm.Stage     `json:"stage"`
	Current  int           `json:"current"`
	Versions []fsm.Version `json:"versions"`
}

func (n *Node) getHistory(r *http.Request) (any, error) {
	ref, err := n.apiRef(r)
	if err != nil {
		return nil, err
	}
	st, err := fsm.ParseStage(r.URL.Query().Get("stage"))
	if err != nil {
		return nil, badRequest("%v", err)
	}
	d := n.State().Deployments[fsm.DeploymentKey(ref, st)]
	v := HistoryView{API: ref, Stage: st, Current: d.Current, Versions: d.Versions}
	if v.Versions == nil {
		v.Versions = []fsm.Version{}
	}
	return v, nil
}

func (n *Node) listApps(r *http.Request) (any, error) {
	s := n.State()
	owner := r.URL.Query().Get("owner")
	out := []fsm.App{}
	for _, k := range fsm.SortedKeys(s.Apps) {
		if a := s.Apps[k]; owner == "" || a.Owner == owner {
			out = append(out, a)
		}
	}
	return out, nil
}

func (n *Node) getApp(r *http.Request) (any, error) {
	a, ok := n.State().Apps[r.PathValue("app")]
	if !ok {
		return nil, &APIError{Status: 404, Message: fmt.Sprintf("app %q not found", r.PathValue("app"))}
	}
	return a, nil
}

func (n *Node) listGrants(r *http.Request) (any, error) {
	s := n.State()
	out := []fsm.GrantSpec{}
	for _, k := range fsm.SortedKeys(s.Grants) {
		g := s.Grants[k]
		if app := r.URL.Query().Get("app"); app != "" && g.App != app {
			continue
		}
		out = append(out, g)
	}
	return out, nil
}

// Member is one node of the cluster as `tollgate members` shows it.
type Member struct {
	ID   string `json:"id"`
	Role string `json:"role"` // leader | follower | non-voter | none (in gossip, not in raft)
	// Address is the raft address; Gossip the gossip one.
	Address string `json:"address"`
	Gossip  string `json:"gossip,omitempty"`
	// State is the member's gossip state as this node sees it: alive, dead, left, or
	// unknown (in raft, never seen by gossip).
	State string `json:"state"`
	// AppliedIndex is the raft index the member has applied, as it answered (0: it did
	// not answer within a short timeout).
	AppliedIndex uint64 `json:"appliedIndex,omitempty"`
}

// memberQueryTimeout bounds how long listMembers waits for each member's applied index.
const memberQueryTimeout = 500 * time.Millisecond

func (n *Node) listMembers(r *http.Request) (any, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leaderID := n.raft.LeaderWithID()
	gossip := map[string]cluster.Member{}
	for _, m := range n.gossip.Members() {
		if m.Meta.ID != "" {
			gossip[m.Meta.ID] = m
		}
	}
	out := []Member{}
	inRaft := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		id := string(s.ID)
		inRaft[id] = true
		m := Member{ID: id, Address: string(s.Address), Role: "follower", State: "unknown"}
		if g, ok := gossip[id]; ok {
			m.State, m.Gossip = g.State.String(), g.Addr
		}
		switch {
		case s.ID == leaderID:
			m.Role = "leader"
		case s.Suffrage != raft.Voter:
			m.Role = "non-voter"
		}
		out = append(out, m)
	}
	for id, g := range gossip {
		if !inRaft[id] && g.State == cluster.MemberAlive {
			out = append(out, Member{ID: id, Role: "none", Address: g.Meta.RaftAddr, Gossip: g.Addr, State: g.State.String()})
		}
	}
	// Ask every live member for its applied index, all at once, briefly.
	var wg sync.WaitGroup
	for i := range out {
		m := &out[i]
		if m.ID == n.cfg.NodeID {
			m.State, m.Gossip = "alive", n.gossip.Addr()
			m.AppliedIndex = n.appliedIndex()
			continue
		}
		g, ok := gossip[m.ID]
		if !ok || g.State != cluster.MemberAlive || g.Meta.AdminAddr == "" {
			continue
		}
		wg.Go(func() {
			if st, err := n.askRaftStatus(r.Context(), g.Meta.AdminAddr, memberQueryTimeout); err == nil {
				m.AppliedIndex = st.AppliedIndex
			}
		})
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// randomDigits returns n decimal digits from crypto/rand, uniformly (bytes of 250 and
// above are drawn again so that every digit is as likely), the first not zero.
func randomDigits(n int) string {
	out := make([]byte, 0, n)
	var b [1]byte
	for len(out) < n {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if b[0] >= 250 || (len(out) == 0 && b[0]%10 == 0) {
			continue
		}
		out = append(out, '0'+b[0]%10)
	}
	return string(out)
}

func (n *Node) postGrant(r *http.Request) (any, error) {
	var g fsm.GrantSpec
	if err := decodeBody(r, &g); err != nil {
		return nil, err
	}
	return n.propose(fsm.CmdGrant, &fsm.Grant{Grant: g})
}

func (n *Node) deleteGrant(r *http.Request) (any, error) {
	ref := fsm.APIRef(r.PathValue("group"), r.PathValue("api"))
	if _, err := n.propose(fsm.CmdRevoke, &fsm.Revoke{App: r.PathValue("app"), API: ref}); err != nil {
		return nil, err
	}
	return map[string]string{"revoked": r.PathValue("app") + " " + ref}, nil
}

// RotateRequest is the body of /v1/apps/{app}/rotate; an empty secret is generated.
type RotateRequest struct {
	Secret string `json:"secret,omitempty"`
}

func (n *Node) postRotate(r *http.Request) (any, error) {
	var req RotateRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Secret == "" {
		req.Secret = randomHex(16)
	}
	return n.propose(fsm.CmdRotateSecret, &fsm.RotateSecret{App: r.PathValue("app"), Secret: req.Secret})
}

func (n *Node) postAppState(disabled bool) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		return n.propose(fsm.CmdSetAppState, &fsm.SetAppState{App: r.PathValue("app"), Disabled: disabled})
	}
}
