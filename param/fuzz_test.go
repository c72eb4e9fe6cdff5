package param

import (
	"bufio"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/fsm"
)

// fuzzDef declares one parameter of each type over query, header and form, with
// mapping across locations, so the fuzzer reaches every decoder and checker.
func fuzzDef() *fsm.APIDef {
	return &fsm.APIDef{
		Path: "/f/[p]",
		Params: []fsm.Param{
			{Name: "p", In: fsm.InPath, MaxLength: ptr(16)},
			{Name: "i", In: fsm.InQuery, Type: "int", Min: ptr(-5.0), Max: ptr(5.0)},
			{Name: "l", In: fsm.InQuery, Type: "long"},
			{Name: "d", In: fsm.InQuery, Type: "double", Max: ptr(1e6)},
			{Name: "b", In: fsm.InQuery, Type: "boolean"},
			{Name: "a", In: fsm.InQuery, Type: "array", Items: "float"},
			{Name: "s", In: fsm.InQuery, Regex: "^[a-z]*$", MaxLength: ptr(8), Default: ptr("x")},
			{Name: "X-H", In: fsm.InHeader, Type: "int"},
			{Name: "e", In: fsm.InForm, Enum: []string{"c", "f"}},
			{Name: "fl", In: fsm.InForm, Type: "float"},
		},
		Backend: fsm.Backend{
			Path: "/b/[p]/[ii]",
			Map: []fsm.ParamMapping{
				{Param: "i", In: "path", Name: "ii"},
				{Param: "X-H", In: "query", Name: "h"},
				{Param: "e", In: "header", Name: "X-E"},
				{Param: "l", In: "form"},
			},
			Constants: []fsm.ConstantParam{{Name: "k", In: "query", Value: "v"}},
		},
	}
}

// FuzzApply feeds arbitrary query strings, header values and form bodies through a
// real request parse, verification and conversion. Properties: no panic; an error
// has a well-formed message; an accepted request reaches the backend with declared
// names only, each holding a value that passes its rule.
func FuzzApply(f *testing.F) {
	f.Add("i=1&l=2&d=3.5&b=true&a=1,2.5&s=abc", "7", "e=c&fl=1.5", "x")
	f.Add("i=9", "", "", "x")
	f.Add("i=-2147483649&a=&a=,", "1e3", "e=%FF", "")
	f.Add("s=%00%0d%0a&b=TRUE&junk=1", "-0", "fl=1e39&other=2", "..")
	plan := mustCompile(f, fuzzDef(), "p")
	allowedQuery := map[string]bool{"d": true, "b": true, "a": true, "s": true, "h": true, "k": true}
	f.Fuzz(func(t *testing.T, rawQuery, hdr, body, pathValue string) {
		req := &fasthttp.Request{}
		wire := "POST /f/x?" + rawQuery + " HTTP/1.1\r\nHost: h\r\nX-H: " + hdr +
			"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body
		if req.Read(bufio.NewReader(strings.NewReader(wire))) != nil {
			return // not a request a server would hand the proxy
		}
		var s Scratch
		pv := [][]byte{[]byte(pathValue)}
		if err := plan.Apply(req, pv, nil, &s); err != nil {
			m := string(err.AppendMessage(nil))
			if err.Kind < KindMissing || err.Kind > KindBody || strings.ContainsAny(m, "\r\n\x00") ||
				!(strings.HasPrefix(m, "Invalid Parameter: ") || strings.HasPrefix(m, "Required Parameter Missing: ") ||
					strings.HasPrefix(m, "Invalid Request Body")) {
				t.Fatalf("malformed error %q (kind %v)", m, err.Kind)
			}
			return
		}
		q, _ := url.ParseQuery(string(req.URI().QueryString()))
		for k, vs := range q {
			if !allowedQuery[k] {
				t.Fatalf("undeclared query %q reached the backend: %s", k, req.URI().QueryString())
			}
			for _, v := range vs {
				switch k {
				case "d":
					if x, ok := parseFloat([]byte(v), 64); !ok || x > 1e6 {
						t.Fatalf("d=%q passed", v)
					}
				case "h":
					if _, ok := parseInt([]byte(v), 32); !ok {
						t.Fatalf("h=%q passed", v)
					}
				case "s":
					if len(v) > 8 || strings.Trim(v, "abcdefghijklmnopqrstuvwxyz") != "" {
						t.Fatalf("s=%q passed", v)
					}
				}
			}
		}
		if q.Get("k") != "v" {
			t.Fatalf("constant missing: %s", req.URI().QueryString())
		}
		fm, _ := url.ParseQuery(string(req.Body()))
		for k := range fm {
			if k != "fl" && k != "l" {
				t.Fatalf("undeclared form %q reached the backend: %q", k, req.Body())
			}
		}
		// A value moved into a header carries each value sent, joined with commas
		// (param/doc.go, Conversion): each must be one the enum allows.
		if e := string(req.Header.Peek("X-E")); e != "" {
			for _, v := range strings.Split(e, ",") {
				if v != "c" && v != "f" {
					t.Fatalf("X-E=%q passed", e)
				}
			}
		}
		bp := string(plan.BackendPath(nil, pv, nil, &s))
		if strings.Count(bp, "/") != 3 || strings.ContainsAny(bp, "?# ") {
			t.Fatalf("backend path %q escapes its segments", bp)
		}
	})
}

// FuzzNumbers checks the allocation-free number parsers against strconv.
func FuzzNumbers(f *testing.F) {
	for _, s := range []string{"0", "-0", "+12", "2147483647", "-2147483648", "9223372036854775808", "1.5e3", ".5", "5.", "1e", "0x10", "NaN", "1_000", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, bits := range []int{32, 64} {
			n, ok := parseInt([]byte(s), bits)
			want, err := strconv.ParseInt(strings.TrimPrefix(s, "+"), 10, bits)
			plain := plainInt.MatchString(s) // the syntax parseInt accepts
			if plain && (err == nil) != ok {
				t.Fatalf("parseInt(%q, %d) ok=%v, strconv err=%v", s, bits, ok, err)
			}
			if ok && (err != nil || n != want) {
				t.Fatalf("parseInt(%q, %d) = %d, strconv = %d, %v", s, bits, n, want, err)
			}
			x, ok := parseFloat([]byte(s), bits)
			if ok {
				y, err := strconv.ParseFloat(s, bits)
				if err != nil || x != y {
					t.Fatalf("parseFloat(%q, %d) = %v, strconv = %v, %v", s, bits, x, y, err)
				}
			}
		}
	})
}

var plainInt = regexp.MustCompile(`^[+-]?[0-9]+$`)
