package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
)

func TestLoadGood(t *testing.T) {
	b, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Groups) != 2 || len(b.Groups[0].APIs) != 3 || len(b.Apps) != 2 || len(b.Certificates) != 1 {
		t.Fatalf("unexpected shape: %+v", b)
	}
	city := b.Groups[0].APIs[0]
	if city.Method != "GET" || city.Path != "/cities/[city]" || city.Backend.Timeout.D() != 3*time.Second {
		t.Fatalf("city = %+v", city)
	}
	if d := city.Params[1].Default; d == nil || *d != "3" {
		t.Fatalf("an unquoted number must decode into a string default, got %v", d)
	}
	if got, want := string(b.Groups[0].APIs[1].Body.Schema),
		`{"properties":{"qty":{"minimum":1,"type":"integer"}},"required":["qty"],"type":"object"}`; got != want {
		t.Fatalf("schema = %s, want %s", got, want)
	}
	if e := b.Grants[0].Expires; e == nil || !e.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("expires = %v", e)
	}
	if !reflect.DeepEqual(city.Deploy, []fsm.Stage{fsm.StageTest, fsm.StageRelease}) {
		t.Fatalf("deploy = %v", city.Deploy)
	}
}

// TestLoadBroken pins the whole message for each kind of broken file: the CLI prints
// it as is, so the file, line, path and wording are the contract.
func TestLoadBroken(t *testing.T) {
	tests := []struct{ file, want string }{
		{"syntax.yaml", `testdata/syntax.yaml:8: did not find expected ',' or '}' (a { or [ left open? inside {...}, quote values with brackets: "/items/[id]")`},
		{"unknown_field.yaml", `testdata/unknown_field.yaml:12: groups[0].apis[1].methd: unknown field (did you mean "method"?)
testdata/unknown_field.yaml:15: groups[0].apis[1].backend.stauts: unknown field (did you mean "status"?)`},
		{"unknown_stage.yaml", `testdata/unknown_stage.yaml:11: groups[0].apis[0].deploy[1]: unknown stage "PROD" (want TEST, PRE or RELEASE, in upper case)
testdata/unknown_stage.yaml:15: grants[0].stages[1]: unknown stage "release" (want TEST, PRE or RELEASE, in upper case)`},
		{"dangling.yaml", `testdata/dangling.yaml:11: groups[0].apis[0].backend.signature: backend key "backend-key-2" is not defined in backendKeys
testdata/dangling.yaml:12: groups[0].apis[0].traffic: traffic policy "gold" is not defined in traffic
testdata/dangling.yaml:17: grants[1].app: app "tablet" is not defined in apps
testdata/dangling.yaml:19: grants[2].api: API "weather/town" is not declared in groups`},
		{"wrong_type.yaml", `testdata/wrong_type.yaml:9: groups[0].apis[0].params[0].min: want a number, got "lots"
testdata/wrong_type.yaml:12: groups[0].apis[0].params[1].enum: want a list, got "c"
testdata/wrong_type.yaml:13: groups[0].apis[0].params[1].required: want true or false, got "maybe"
testdata/wrong_type.yaml:17: groups[0].apis[0].backend.timeout: duration "3 seconds": want a number with a unit, like 3s or 500ms
testdata/wrong_type.yaml:21: traffic[0].api: want an integer, got a list
testdata/wrong_type.yaml:23: grants[0].expires: want a timestamp like 2027-01-01T00:00:00Z, got "tomorrow"`},
		{"duplicate_key.yaml", `testdata/duplicate_key.yaml:4: apps[0].name: duplicate key (first at line 2)`},
		{"two_docs.yaml", `testdata/two_docs.yaml:3: a second document: the file holds one bundle`},
		{"empty.yaml", "testdata/empty.yaml: the file is empty (an empty bundle would delete everything; write `groups: []` to mean it)"},
		{"merge.yaml", `testdata/merge.yaml:23: groups[0].apis[1].backend.tiemout: unknown field (did you mean "timeout"?)`},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			b, err := Load("testdata/" + tc.file)
			if b != nil {
				t.Fatal("a refused file must return no bundle")
			}
			var el ErrorList
			if !errors.As(err, &el) {
				t.Fatalf("want an ErrorList, got %T %v", err, err)
			}
			if err.Error() != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", err, tc.want)
			}
		})
	}
}

func TestParseInline(t *testing.T) {
	tests := []struct{ name, data, want string }{
		// yaml.v3 reports parser errors one line early; these pin the correction.
		{"unclosed flow list", "apps:\n  - {name: a}\ngrants: [\n  {app: a\n", "f.yaml:4: did not find expected ',' or '}'"},
		// The library names the line where the enclosing block starts, not the bad one.
		{"bad indentation", "apps:\n  - name: a\n    owner: b\n   key: c\n", "f.yaml:2: did not find expected '-' indicator"},
		{"block item in mapping", "apps: []\ngroups: []\n- x\n", "f.yaml:3: did not find expected key"},
		{"scanner error", "apps: []\ngroups: a: b\n", "f.yaml:2: mapping values are not allowed"},
		{"root is a list", "- name: a\n", "f.yaml:1: want a mapping, got a list"},
		{"top-level typo", "apps: []\ngrant: []\n", `f.yaml:2: grant: unknown field (did you mean "grants"?)`},
		{"mapping for a string", "apps:\n  - name: {a: 1}\n", "f.yaml:2: apps[0].name: want a string, got a mapping"},
		{"bad schema", "groups:\n- name: g\n  apis:\n  - name: a\n    method: POST\n    path: /a\n    auth: anonymous\n    body:\n      schema: {type: 7}\n    backend: {type: mock}\n",
			"f.yaml:9: groups[0].apis[0].body.schema: invalid JSON Schema"},
		{"missing field points at parent", "apps:\n  - owner: a\n", "f.yaml:2: apps[0].name: required"},
		{"header key path", "groups:\n- name: g\n  apis:\n  - name: a\n    method: GET\n    path: /a\n    auth: anonymous\n    backend:\n      type: mock\n      headers:\n        X-A: b\n        \"X.B C\": d\n",
			`f.yaml:12: groups[0].apis[0].backend.headers["X.B C"]: "X.B C" is not a valid header name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.data))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want prefix %s", err, tc.want)
			}
		})
	}
}

func TestExtensionKeysAndMerge(t *testing.T) {
	data := `x-backend: &backend {type: http, url: "http://127.0.0.1:9001", timeout: 3s}
groups:
  - name: g
    apis:
      - {name: a, method: GET, path: /a, auth: anonymous, backend: {<<: *backend, path: /v1/a}}
      - {name: b, method: GET, path: /b, auth: anonymous, backend: {<<: *backend, timeout: 5s}}
`
	b, err := Parse("f.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	a, bb := b.Groups[0].APIs[0].Backend, b.Groups[0].APIs[1].Backend
	if a.URL != "http://127.0.0.1:9001" || a.Path != "/v1/a" || a.Timeout.D() != 3*time.Second || bb.Timeout.D() != 5*time.Second {
		t.Fatalf("merge: %+v %+v", a, bb)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	b, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Parse("export.yaml", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(b, b2) {
		t.Fatalf("round trip changed the bundle:\n%s", out)
	}
	out2, _ := Marshal(b2)
	if string(out) != string(out2) {
		t.Fatal("Marshal is not deterministic")
	}
}

func TestLocate(t *testing.T) {
	data, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		line int
	}{
		{"", 2},
		{"groups", 2},
		{"groups[0]", 3},
		{"groups[0].domains[0]", 4},
		{"groups[0].apis[0].method", 7},
		{"groups[0].apis[0].params[1].default", 12},
		{"groups[0].apis[0].backend.url", 16},
		{"groups[0].apis[0].backend.map[0].name", 19},
		{"groups[0].apis[0].deploy[1]", 25},
		{"groups[0].apis[2].backend.headers.Content-Type", 42},
		{`groups[0].apis[2].backend.headers["Content-Type"]`, 42},
		{"groups[0].apis[1].jwt", 26}, // absent: its API
		{"groups[0].apis[9].name", 5}, // no such API: the list
		{"grants[1].api", 61},
		{"traffic[0].special[1].limit", 68},
		{"nosuch.field", 2},
	}
	for _, tc := range tests {
		if got := Locate(data, tc.path); got != tc.line {
			t.Errorf("Locate(%q) = %d, want %d", tc.path, got, tc.line)
		}
	}
	if got := Locate([]byte("a: [\n"), "a"); got != 0 {
		t.Errorf("unparsable data: got %d, want 0", got)
	}
}

// TestLocateAll is the CLI's path for errors the admin API finds in a bundle it
// parsed: they come back as FieldErrors and are printed against the file.
func TestLocateAll(t *testing.T) {
	data, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := LocateAll("good.yaml", data, []fsm.FieldError{
		{Path: "grants[1].app", Message: "app is disabled"},
		{Path: "groups[0].apis[0].path", Message: "conflicts with the state"},
	}).Error()
	want := `good.yaml:8: groups[0].apis[0].path: conflicts with the state
good.yaml:61: grants[1].app: app is disabled`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestSplitPath(t *testing.T) {
	got := splitPath(`a[0].b.c["x.y]\"z"][12]`)
	want := []segment{{"a", -1}, {"", 0}, {"b", -1}, {"c", -1}, {`x.y]"z`, -1}, {"", 12}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// TestHostileYAML guards the walks of the node tree against documents the YAML parser
// accepts but that never end (an anchor inside itself) or explode (nested aliases).
func TestHostileYAML(t *testing.T) {
	tests := []struct{ name, data, want string }{
		{"self alias", "apps: &a [*a]\n", "f.yaml: anchor 'a' value contains itself"},
		{"self merge", "x-a: &a {<<: *a}\n", "f.yaml: anchor 'a' value contains itself"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse("f.yaml", []byte(tc.data)); err == nil || err.Error() != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
			if l := Locate([]byte(tc.data), "apps[0].name"); l != 0 {
				t.Fatalf("Locate = %d, want 0", l)
			}
		})
	}
	t.Run("many errors", func(t *testing.T) {
		// 3 groups × 10 aliased APIs × 10 aliased params, each with an unknown field.
		data := "x-p: &p [" + strings.Repeat("{name: p, in: query, bad: x}, ", 9) + "{name: p, in: query, bad: x}]\n" +
			"x-api: &api {name: a, method: GET, path: /a, auth: anonymous, backend: {type: mock}, params: *p}\n" +
			"x-apis: &apis [" + strings.Repeat("*api, ", 9) + "*api]\n" +
			"groups: [{name: g, apis: *apis}, {name: h, apis: *apis}, {name: i, apis: *apis}]\n"
		_, err := Parse("f.yaml", []byte(data))
		var el ErrorList
		if !errors.As(err, &el) || len(el) != MaxErrors+1 || !strings.HasPrefix(el[MaxErrors].Message, "and ") {
			t.Fatalf("got %d errors: %v", len(el), err)
		}
	})
}
