package param

import (
	"net/url"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/fsm"
)

// TestRuleMatrix runs every type and rule, valid and invalid, through a compiled plan
// on a real request, the parameter sent in the query.
func TestRuleMatrix(t *testing.T) {
	longEnum := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	cases := []struct {
		name  string
		p     fsm.Param
		query string // raw query; "" sends no parameter
		want  string // "" means accepted
	}{
		{"string ok", fsm.Param{Type: "string"}, "a=abc", ""},
		{"string empty ok", fsm.Param{}, "a=", ""},
		{"int ok", fsm.Param{Type: "int"}, "a=42", ""},
		{"int negative ok", fsm.Param{Type: "int"}, "a=-7", ""},
		{"int plus ok", fsm.Param{Type: "int"}, "a=%2B7", ""},
		{"int max32 ok", fsm.Param{Type: "int"}, "a=2147483647", ""},
		{"int min32 ok", fsm.Param{Type: "int"}, "a=-2147483648", ""},
		{"int overflow", fsm.Param{Type: "int"}, "a=2147483648", "Invalid Parameter: a (type int)"},
		{"int fraction", fsm.Param{Type: "int"}, "a=4.2", "Invalid Parameter: a (type int)"},
		{"int text", fsm.Param{Type: "int"}, "a=abc", "Invalid Parameter: a (type int)"},
		{"int empty", fsm.Param{Type: "int"}, "a=", "Invalid Parameter: a (type int)"},
		{"int sign only", fsm.Param{Type: "int"}, "a=-", "Invalid Parameter: a (type int)"},
		{"long ok", fsm.Param{Type: "long"}, "a=9223372036854775807", ""},
		{"long min ok", fsm.Param{Type: "long"}, "a=-9223372036854775808", ""},
		{"long overflow", fsm.Param{Type: "long"}, "a=9223372036854775808", "Invalid Parameter: a (type long)"},
		{"float ok", fsm.Param{Type: "float"}, "a=1.5", ""},
		{"float exp ok", fsm.Param{Type: "float"}, "a=1e10", ""},
		{"float range", fsm.Param{Type: "float"}, "a=1e39", "Invalid Parameter: a (type float)"},
		{"float NaN", fsm.Param{Type: "float"}, "a=NaN", "Invalid Parameter: a (type float)"},
		{"float hex", fsm.Param{Type: "float"}, "a=0x10", "Invalid Parameter: a (type float)"},
		{"double ok", fsm.Param{Type: "double"}, "a=1e39", ""},
		{"double leading dot ok", fsm.Param{Type: "double"}, "a=.5", ""},
		{"double trailing dot ok", fsm.Param{Type: "double"}, "a=5.", ""},
		{"double range", fsm.Param{Type: "double"}, "a=1e400", "Invalid Parameter: a (type double)"},
		{"double bad exp", fsm.Param{Type: "double"}, "a=1e", "Invalid Parameter: a (type double)"},
		{"double Inf", fsm.Param{Type: "double"}, "a=Inf", "Invalid Parameter: a (type double)"},
		{"boolean true", fsm.Param{Type: "boolean"}, "a=true", ""},
		{"boolean FALSE", fsm.Param{Type: "boolean"}, "a=FALSE", ""},
		{"boolean yes", fsm.Param{Type: "boolean"}, "a=yes", "Invalid Parameter: a (type boolean)"},
		{"array commas ok", fsm.Param{Type: "array", Items: "int"}, "a=1,2,3", ""},
		{"array repeated ok", fsm.Param{Type: "array", Items: "int"}, "a=1&a=2,3", ""},
		{"array empty ok", fsm.Param{Type: "array", Items: "int"}, "a=", ""},
		{"array bad item", fsm.Param{Type: "array", Items: "int"}, "a=1,x", "Invalid Parameter: a (type array of int)"},
		{"array empty item", fsm.Param{Type: "array", Items: "int"}, "a=1,,2", "Invalid Parameter: a (type array of int)"},
		{"array item max", fsm.Param{Type: "array", Items: "int", Max: ptr(2.0)}, "a=1&a=3", "Invalid Parameter: a (max 2)"},
		{"array string default items", fsm.Param{Type: "array", Enum: []string{"x", "y"}}, "a=x,y", ""},
		{"array string enum", fsm.Param{Type: "array", Enum: []string{"x", "y"}}, "a=x,z", "Invalid Parameter: a (enum x,y)"},
		{"required present", fsm.Param{Required: true}, "a=1", ""},
		{"required empty is present", fsm.Param{Required: true}, "a=", ""},
		{"required absent", fsm.Param{Required: true}, "", "Required Parameter Missing: a"},
		{"optional absent", fsm.Param{Type: "int", Min: ptr(1.0)}, "", ""},
		{"default absent", fsm.Param{Type: "int", Required: true, Default: ptr("3")}, "", ""},
		{"default present checked", fsm.Param{Type: "int", Default: ptr("3")}, "a=x", "Invalid Parameter: a (type int)"},
		{"min ok", fsm.Param{Type: "int", Min: ptr(1.0), Max: ptr(14.0)}, "a=1", ""},
		{"max ok", fsm.Param{Type: "int", Min: ptr(1.0), Max: ptr(14.0)}, "a=14", ""},
		{"below min", fsm.Param{Type: "int", Min: ptr(1.0), Max: ptr(14.0)}, "a=0", "Invalid Parameter: a (min 1)"},
		{"above max", fsm.Param{Type: "int", Min: ptr(1.0), Max: ptr(100.0)}, "a=101", "Invalid Parameter: a (max 100)"},
		{"long above max", fsm.Param{Type: "long", Max: ptr(1e12)}, "a=1000000000001", "Invalid Parameter: a (max 1000000000000)"},
		{"double below min", fsm.Param{Type: "double", Min: ptr(0.5)}, "a=0.4", "Invalid Parameter: a (min 0.5)"},
		{"float above max", fsm.Param{Type: "float", Max: ptr(-1.5)}, "a=-1.4", "Invalid Parameter: a (max -1.5)"},
		{"minLength ok", fsm.Param{MinLength: ptr(2), MaxLength: ptr(4)}, "a=ab", ""},
		{"minLength runes", fsm.Param{MinLength: ptr(2), MaxLength: ptr(2)}, "a=" + url.QueryEscape("日本"), ""},
		{"below minLength", fsm.Param{MinLength: ptr(2)}, "a=a", "Invalid Parameter: a (minLength 2)"},
		{"above maxLength", fsm.Param{MaxLength: ptr(4)}, "a=abcde", "Invalid Parameter: a (maxLength 4)"},
		{"int length", fsm.Param{Type: "int", MaxLength: ptr(2)}, "a=100", "Invalid Parameter: a (maxLength 2)"},
		{"enum ok", fsm.Param{Enum: []string{"c", "f"}}, "a=c", ""},
		{"enum bad", fsm.Param{Enum: []string{"c", "f"}}, "a=k", "Invalid Parameter: a (enum c,f)"},
		{"enum case", fsm.Param{Enum: []string{"c", "f"}}, "a=C", "Invalid Parameter: a (enum c,f)"},
		{"long enum ok", fsm.Param{Enum: longEnum}, "a=j", ""},
		{"long enum bad", fsm.Param{Enum: longEnum}, "a=k", "Invalid Parameter: a (enum a,b,c,d,e,f,g,h,i,j)"},
		{"int enum", fsm.Param{Type: "int", Enum: []string{"1", "2"}}, "a=3", "Invalid Parameter: a (enum 1,2)"},
		{"regex ok", fsm.Param{Regex: "^[a-z]+$"}, "a=abc", ""},
		{"regex bad", fsm.Param{Regex: "^[a-z]+$"}, "a=ab1", "Invalid Parameter: a (regex ^[a-z]+$)"},
		{"regex search", fsm.Param{Regex: "[0-9]"}, "a=ab1", ""},
		{"scalar repeated all checked", fsm.Param{Type: "int"}, "a=1&a=x", "Invalid Parameter: a (type int)"},
		{"type before range", fsm.Param{Type: "int", Max: ptr(5.0)}, "a=x", "Invalid Parameter: a (type int)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Name, tc.p.In = "a", fsm.InQuery
			p := mustCompile(t, &fsm.APIDef{Path: "/x", Params: []fsm.Param{tc.p}})
			uri := "/x"
			if tc.query != "" {
				uri += "?" + tc.query
			}
			req := request(t, "GET", uri, nil, "", "")
			var s Scratch
			if got := msg(p.Apply(req, nil, nil, &s)); got != tc.want {
				t.Fatalf("Apply(%q) = %q, want %q", tc.query, got, tc.want)
			}
		})
	}
}

// TestLocations checks that each location is read and checked, and reports the rule.
func TestLocations(t *testing.T) {
	def := &fsm.APIDef{Path: "/items/[id]", Params: []fsm.Param{
		{Name: "id", In: fsm.InPath, Type: "long", Max: ptr(100.0)},
		{Name: "q", In: fsm.InQuery, Type: "int", Max: ptr(100.0)},
		{Name: "X-Num", In: fsm.InHeader, Type: "int", Max: ptr(100.0), Required: true},
		{Name: "f", In: fsm.InForm, Type: "int", Max: ptr(100.0)},
		{Name: "tags", In: fsm.InHeader, Type: "array", Items: "int", Max: ptr(9.0)},
	}}
	p := mustCompile(t, def, "id")
	cases := []struct {
		name    string
		path    string
		query   string
		headers [][2]string
		body    string
		want    string
	}{
		{"all ok", "7", "q=7", [][2]string{{"X-Num", "7"}}, "f=7", ""},
		{"path", "101", "", [][2]string{{"X-Num", "7"}}, "", "Invalid Parameter: id (max 100)"},
		{"query", "7", "q=101", [][2]string{{"X-Num", "7"}}, "", "Invalid Parameter: q (max 100)"},
		{"header", "7", "", [][2]string{{"X-Num", "101"}}, "", "Invalid Parameter: X-Num (max 100)"},
		{"header any case", "7", "", [][2]string{{"x-num", "7"}}, "", ""},
		{"header missing", "7", "", nil, "", "Required Parameter Missing: X-Num"},
		{"form", "7", "", [][2]string{{"X-Num", "7"}}, "f=101", "Invalid Parameter: f (max 100)"},
		{"header array", "7", "", [][2]string{{"X-Num", "7"}, {"Tags", "1,2"}, {"Tags", "10"}}, "", "Invalid Parameter: tags (max 9)"},
		{"dot segment", "..", "", [][2]string{{"X-Num", "7"}}, "", "Invalid Parameter: id (path segment)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, "POST", "/items/x?"+tc.query, tc.headers, "application/x-www-form-urlencoded", tc.body)
			var s Scratch
			got := msg(p.Apply(req, [][]byte{[]byte(tc.path)}, nil, &s))
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name string
		def  fsm.APIDef
		want string
	}{
		{"min on string", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Min: ptr(1.0)}}}, "min and max bound numbers"},
		{"bad type", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Type: "date"}}}, `type "date"`},
		{"bad items", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Type: "array", Items: "array"}}}, "arrays of arrays"},
		{"bad in", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "body"}}}, `in "body"`},
		{"bad regex", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Regex: "("}}}, "regex"},
		{"default breaks rule", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Type: "int", Max: ptr(5.0), Default: ptr("9")}}}, `default "9" breaks its own rule: max 5`},
		{"enum wrong type", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Type: "int", Enum: []string{"x"}}}}, `enum value "x" is not of type int`},
		{"min above max", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query", Type: "int", Min: ptr(5.0), Max: ptr(1.0)}}}, "min is above max"},
		{"duplicate", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query"}, {Name: "a", In: "header"}}}, "declared twice"},
		{"path not in path", fsm.APIDef{Path: "/x", Params: []fsm.Param{{Name: "id", In: "path"}}}, "not a [id] segment"},
		{"map unknown", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query"}}, Backend: fsm.Backend{Map: []fsm.ParamMapping{{Param: "b", In: "header"}}}}, `backend.map "b": no such declared param`},
		{"target clash", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query"}}, Backend: fsm.Backend{Constants: []fsm.ConstantParam{{Name: "a", In: "query", Value: "1"}}}}, `backend query "a" is already written by param "a"`},
		{"header clash any case", fsm.APIDef{Backend: fsm.Backend{Constants: []fsm.ConstantParam{{Name: "X-A", In: "header"}, {Name: "x-a", In: "header"}}}}, "already written"},
		{"framing header", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "query"}}, Backend: fsm.Backend{Map: []fsm.ParamMapping{{Param: "a", In: "header", Name: "Content-Length"}}}}, "frames the message"},
		{"unknown system", fsm.APIDef{Backend: fsm.Backend{System: []fsm.SystemParam{{Param: "CaNope", In: "header"}}}}, "unknown system parameter"},
		{"unbound segment", fsm.APIDef{Path: "/x", Backend: fsm.Backend{Path: "/y/[z]"}}, "[z] is neither"},
		{"bad schema", fsm.APIDef{Body: &fsm.BodySpec{Schema: `{"type":"nope"}`}}, "body.schema"},
		{"external ref", fsm.APIDef{Body: &fsm.BodySpec{Schema: `{"$ref":"file:///etc/passwd"}`}}, "body.schema"},
		{"form with schema", fsm.APIDef{Params: []fsm.Param{{Name: "a", In: "form"}}, Body: &fsm.BodySpec{Schema: `{"type":"object"}`}}, "form parameters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(&tc.def, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	e := newError(KindInvalid, "a\r\nX-Evil: 1", "max 100")
	if got := e.Error(); got != "Invalid Parameter: a  X-Evil: 1 (max 100)" {
		t.Fatalf("control characters must not reach a header: %q", got)
	}
	if got := (&Error{Kind: KindBody}).Error(); got != "Invalid Request Body" {
		t.Fatalf("body message: %q", got)
	}
	for k, want := range map[Kind]string{KindMissing: "missing", KindInvalid: "invalid", KindInjection: "injection", KindBody: "body", 0: "unknown"} {
		if k.String() != want {
			t.Fatalf("Kind(%d).String() = %q", k, k.String())
		}
	}
}
