package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var at = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

func testBundle() Bundle {
	return Bundle{
		Groups: []GroupSpec{{
			Name:    "weather",
			Domains: []string{"api.example.com"},
			APIs: []APISpec{{
				Name: "city",
				APIDef: APIDef{Method: "GET", Path: "/cities/[city]", Auth: AuthAnonymous,
					Backend: Backend{Type: BackendHTTP, URL: "http://127.0.0.1:9001", Path: "/v2/[city]", Timeout: Duration(3 * time.Second)}},
				Deploy: []Stage{StageTest, StageRelease},
			}, {
				Name:   "ping",
				APIDef: APIDef{Method: "GET", Path: "/ping", Auth: AuthAnonymous, Backend: Backend{Type: BackendMock, Status: 200, Body: "pong"}},
				Deploy: []Stage{StageRelease},
			}},
		}},
		Apps:        []AppSpec{{Name: "mobile", Owner: "alice", Generated: &Credentials{Key: "111", Secret: "s1-0123456789abcdef", Code: "c1"}}},
		Grants:      []GrantSpec{{App: "mobile", API: "weather/city", Stages: []Stage{StageRelease}}},
		Traffic:     []TrafficSpec{{Name: "basic", Window: WindowMinute, API: 1000, App: 100, User: 500}},
		BackendKeys: []BackendKey{{Name: "k1", Key: "DemoKey1", Secret: "DemoSecret1"}},
	}
}

// applyCmd runs one command through the FSM as raft would, at the given index.
func applyCmd(t *testing.T, f *FSM, index uint64, ct CommandType, body any) any {
	t.Helper()
	data, err := Encode(ct, body)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
}

func mustPlan(t *testing.T, res any) *Plan {
	t.Helper()
	p, ok := res.(*Plan)
	if !ok {
		t.Fatalf("apply answered %T %v, want a plan", res, res)
	}
	return p
}

func planStrings(p *Plan) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.Action+" "+c.Kind+" "+c.Name+" "+c.Detail)
	}
	return out
}

func TestFSM_ApplyBundle(t *testing.T) {
	f := New()
	p := mustPlan(t, applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at}))
	want := []string{
		"create group weather ",
		"create api weather/city ",
		"deploy api weather/city TEST v1",
		"deploy api weather/city RELEASE v1",
		"create api weather/ping ",
		"deploy api weather/ping RELEASE v1",
		"create app mobile ",
		"create grant mobile|weather/city ",
		"create traffic basic ",
		"create backendKey k1 ",
	}
	if got := planStrings(p); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s := f.State()
	if s.Index != 1 || f.AppliedIndex() != 1 {
		t.Fatalf("index %d applied %d", s.Index, f.AppliedIndex())
	}
	if v, ok := s.Served("weather/city", StageRelease); !ok || v.Number != 1 || v.Def.Path != "/cities/[city]" {
		t.Fatalf("served %+v %v", v, ok)
	}
	if _, ok := s.Served("weather/city", StagePre); ok {
		t.Fatal("PRE should serve nothing")
	}
	app := s.Apps["mobile"]
	if app.Key != "111" || len(app.Secrets) != 1 || app.Secrets[0] != "s1-0123456789abcdef" || app.Code != "c1" {
		t.Fatalf("app credentials %+v", app)
	}

	// The same bundle again changes nothing and makes no new version, even with other
	// generated credentials: the app keeps the ones it has.
	b := testBundle()
	b.Apps[0].Generated = &Credentials{Key: "999", Secret: "other-0123456789ab", Code: "c9"}
	p = mustPlan(t, applyCmd(t, f, 2, CmdApplyBundle, &ApplyBundle{Bundle: b, At: at.Add(time.Hour)}))
	if !p.Empty() {
		t.Fatalf("re-apply planned %v", planStrings(p))
	}
	if f.State().Apps["mobile"].Key != "111" {
		t.Fatal("re-apply regenerated the app key")
	}

	// A changed definition deploys a new version; dropping a stage undeploys it;
	// dropping an API deletes it with its history; a new secret rotates.
	b = testBundle()
	b.Groups[0].APIs[0].Backend.Path = "/v3/[city]"
	b.Groups[0].APIs[0].Deploy = []Stage{StageRelease}
	b.Groups[0].APIs = b.Groups[0].APIs[:1]
	b.Apps[0].Secret = "s2-0123456789abcdef"
	p = mustPlan(t, applyCmd(t, f, 3, CmdApplyBundle, &ApplyBundle{Bundle: b, At: at}))
	want = []string{
		"update api weather/city ",
		"undeploy api weather/city TEST",
		"deploy api weather/city RELEASE v2",
		"delete api weather/ping ",
		"update app mobile ",
	}
	if got := planStrings(p); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s = f.State()
	if d := s.Deployments["weather/city@TEST"]; d.Current != 0 || len(d.Versions) != 1 {
		t.Fatalf("TEST deployment %+v", d)
	}
	if _, ok := s.Deployments["weather/ping@RELEASE"]; ok {
		t.Fatal("deleted API kept its deployment")
	}
	if got := s.Apps["mobile"].Secrets; len(got) != 2 || got[0] != "s2-0123456789abcdef" || got[1] != "s1-0123456789abcdef" {
		t.Fatalf("rotated secrets %v", got)
	}
}

func TestFSM_ApplyBundleInvalidChangesNothing(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	before := f.State()
	b := testBundle()
	b.Grants[0].App = "nobody"
	res := applyCmd(t, f, 2, CmdApplyBundle, &ApplyBundle{Bundle: b, At: at})
	var ve *ValidationError
	if err, ok := res.(error); !ok || !errors.As(err, &ve) {
		t.Fatalf("want a validation error, got %T %v", res, res)
	}
	if f.State() != before {
		t.Fatal("a refused bundle replaced the state")
	}
	if f.AppliedIndex() != 2 {
		t.Fatalf("applied index %d, want 2", f.AppliedIndex())
	}
}

func TestFSM_Deploy(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	res := applyCmd(t, f, 2, CmdDeploy, &Deploy{API: "weather/city", Stage: StagePre, Note: "first", At: at})
	if r, ok := res.(*DeployResult); !ok || r.Version != 1 {
		t.Fatalf("deploy answered %v", res)
	}
	res = applyCmd(t, f, 3, CmdDeploy, &Deploy{API: "weather/city", Stage: StagePre, At: at})
	if r, ok := res.(*DeployResult); !ok || r.Version != 2 {
		t.Fatalf("second deploy answered %v", res)
	}
	d := f.State().Deployments["weather/city@PRE"]
	if d.Versions[0].Note != "first" || d.Versions[1].Note != "deploy" {
		t.Fatalf("notes %+v", d.Versions)
	}
	for _, bad := range []*Deploy{{API: "weather/none", Stage: StagePre}, {API: "weather/city", Stage: "PROD"}} {
		if err, ok := applyCmd(t, f, 4, CmdDeploy, bad).(error); !ok {
			t.Fatalf("deploy %+v accepted", bad)
		} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalid) {
			t.Fatalf("deploy %+v: %v", bad, err)
		}
	}
}

func TestFSM_Undeploy(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	if _, ok := applyCmd(t, f, 2, CmdUndeploy, &Undeploy{API: "weather/city", Stage: StageRelease}).(*DeployResult); !ok {
		t.Fatal("undeploy refused")
	}
	if _, ok := f.State().Served("weather/city", StageRelease); ok {
		t.Fatal("still served after undeploy")
	}
	if len(f.State().Deployments["weather/city@RELEASE"].Versions) != 1 {
		t.Fatal("undeploy dropped the history")
	}
	if err, ok := applyCmd(t, f, 3, CmdUndeploy, &Undeploy{API: "weather/city", Stage: StageRelease}).(error); !ok || !errors.Is(err, ErrInvalid) {
		t.Fatalf("second undeploy: %v", err)
	}
}

func TestFSM_Rollback(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	b := testBundle()
	b.Groups[0].APIs[0].Backend.Path = "/v3/[city]"
	applyCmd(t, f, 2, CmdApplyBundle, &ApplyBundle{Bundle: b, At: at})
	if v, _ := f.State().Served("weather/city", StageRelease); v.Number != 2 {
		t.Fatalf("serving v%d", v.Number)
	}
	if r, ok := applyCmd(t, f, 3, CmdRollback, &Rollback{API: "weather/city", Stage: StageRelease, Version: 1}).(*DeployResult); !ok || r.Version != 1 {
		t.Fatal("rollback refused")
	}
	v, _ := f.State().Served("weather/city", StageRelease)
	if v.Number != 1 || v.Def.Backend.Path != "/v2/[city]" {
		t.Fatalf("after rollback serving %+v", v)
	}
	if err, ok := applyCmd(t, f, 4, CmdRollback, &Rollback{API: "weather/city", Stage: StageRelease, Version: 3}).(error); !ok || !errors.Is(err, ErrInvalid) {
		t.Fatalf("rollback to a missing version: %v", err)
	}
}

func TestFSM_SnapshotRoundTrip(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	applyCmd(t, f, 2, CmdDeploy, &Deploy{API: "weather/city", Stage: StagePre, At: at})
	var a, b bytes.Buffer
	if err := WriteSnapshot(&a, f.State()); err != nil {
		t.Fatal(err)
	}
	if err := WriteSnapshot(&b, f.State()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("snapshots of one state differ: encoding is not deterministic")
	}
	g := New()
	if err := g.Restore(readCloser{bytes.NewReader(a.Bytes())}); err != nil {
		t.Fatal(err)
	}
	if !sameJSON(f.State(), g.State()) {
		t.Fatal("restored state differs")
	}
	if g.AppliedIndex() != 2 {
		t.Fatalf("restored applied index %d", g.AppliedIndex())
	}
	select {
	case <-g.Changed():
	default:
		t.Fatal("restore did not notify")
	}
	// The restored state accepts further commands.
	if _, ok := applyCmd(t, g, 3, CmdRollback, &Rollback{API: "weather/city", Stage: StagePre, Version: 1}).(*DeployResult); !ok {
		t.Fatal("rollback after restore refused")
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

func TestFSM_CorruptEntryPanics(t *testing.T) {
	f := New()
	for name, data := range map[string][]byte{
		"unknown type": {99, 0x80},
		"undecodable":  {byte(CmdDeploy), 0xc1},
		"empty":        {},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		})
	}
	// An unknown command flagged ignorable is skipped.
	if res := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{byte(IgnoreUnknownFlag | 99), 0x80}}); res != nil {
		t.Fatalf("ignorable command answered %v", res)
	}
}

func TestFSM_ApplyLocalChangesNothing(t *testing.T) {
	f := New()
	p, err := f.ApplyLocal(CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	if err != nil || p.(*Plan).Empty() {
		t.Fatalf("dry run: %v %v", p, err)
	}
	if len(f.State().APIs) != 0 {
		t.Fatal("dry run changed the state")
	}
}

func TestFSM_InitCluster(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdInitCluster, &InitCluster{Secret: "first"})
	applyCmd(t, f, 2, CmdInitCluster, &InitCluster{Secret: "second"})
	if got := f.State().ClusterSecret; got != "first" {
		t.Fatalf("cluster secret %q: the first committed must win", got)
	}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, f.State()); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSnapshot(&buf)
	if err != nil || s.ClusterSecret != "first" {
		t.Fatalf("snapshot lost the cluster secret: %v %q", err, s.ClusterSecret)
	}
}

func TestFSM_GrantRevoke(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	exp := at.Add(time.Hour)
	g := GrantSpec{App: "mobile", API: "weather/ping", Stages: []Stage{StageTest}, Expires: &exp}
	if _, ok := applyCmd(t, f, 2, CmdGrant, &Grant{Grant: g}).(*GrantSpec); !ok {
		t.Fatal("grant refused")
	}
	if got := f.State().Grants[GrantKey("mobile", "weather/ping")]; !got.Expires.Equal(exp) || got.Stages[0] != StageTest {
		t.Fatalf("grant stored as %+v", got)
	}
	for _, bad := range []GrantSpec{
		{App: "ghost", API: "weather/ping", Stages: []Stage{StageTest}},
		{App: "mobile", API: "weather/none", Stages: []Stage{StageTest}},
		{App: "mobile", API: "weather/ping"},
		{App: "mobile", API: "weather/ping", Stages: []Stage{"PROD"}},
	} {
		if _, ok := applyCmd(t, f, 3, CmdGrant, &Grant{Grant: bad}).(error); !ok {
			t.Fatalf("grant %+v accepted", bad)
		}
	}
	applyCmd(t, f, 4, CmdRevoke, &Revoke{App: "mobile", API: "weather/ping"})
	if _, ok := f.State().Grants[GrantKey("mobile", "weather/ping")]; ok {
		t.Fatal("revoked grant still there")
	}
	if err, ok := applyCmd(t, f, 5, CmdRevoke, &Revoke{App: "mobile", API: "weather/ping"}).(error); !ok || !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
}

func TestFSM_RotateSecretAndAppState(t *testing.T) {
	f := New()
	applyCmd(t, f, 1, CmdApplyBundle, &ApplyBundle{Bundle: testBundle(), At: at})
	applyCmd(t, f, 2, CmdRotateSecret, &RotateSecret{App: "mobile", Secret: "s2-0123456789abcdef"})
	applyCmd(t, f, 3, CmdRotateSecret, &RotateSecret{App: "mobile", Secret: "s3-0123456789abcdef"})
	if got := f.State().Apps["mobile"].Secrets; len(got) != 2 || got[0] != "s3-0123456789abcdef" || got[1] != "s2-0123456789abcdef" {
		t.Fatalf("secrets after two rotations: %v", got)
	}
	if _, ok := applyCmd(t, f, 4, CmdRotateSecret, &RotateSecret{App: "mobile", Secret: "short"}).(error); !ok {
		t.Fatal("short secret accepted")
	}
	applyCmd(t, f, 5, CmdSetAppState, &SetAppState{App: "mobile", Disabled: true})
	if !f.State().Apps["mobile"].Disabled {
		t.Fatal("app not disabled")
	}
}
