package param

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/tollgate/tollgate/fsm"
)

// location is where a value lives in a request.
type location uint8

const (
	locPath location = iota + 1
	locQuery
	locHeader
	locForm
)

func parseLocation(s string) (location, bool) {
	switch s {
	case fsm.InPath:
		return locPath, true
	case fsm.InQuery:
		return locQuery, true
	case fsm.InHeader:
		return locHeader, true
	case fsm.InForm:
		return locForm, true
	}
	return 0, false
}

func (l location) String() string {
	switch l {
	case locPath:
		return fsm.InPath
	case locQuery:
		return fsm.InQuery
	case locHeader:
		return fsm.InHeader
	case locForm:
		return fsm.InForm
	}
	return "?"
}

// param is a declared parameter, compiled.
type param struct {
	name       string
	in         location
	key        string // what a request's name is compared with: lower-case for headers
	pathIdx    int    // index into pathValues, for in == locPath
	required   bool
	def        []byte
	chk        checker
	errMissing *Error
	errSegment *Error   // a value that would be a "." or ".." backend path segment
	out        location // where the backend gets it
	outName    string
	// same: the backend gets it where and as the client sent it, so a received value
	// is left untouched (only a default has to be written).
	same bool
}

// extra is a constant or a system parameter: a value the gateway adds.
type extra struct {
	in    location
	name  string
	value []byte // a constant's value
	sys   sysID
	isSys bool
}

func (e *extra) get(sys *System) []byte {
	if e.isSys {
		return sys.get(e.sys)
	}
	return e.value
}

type segKind uint8

const (
	segLiteral   segKind = iota
	segPathValue         // pathValues[idx]
	segParam             // the values of params[idx]
	segExtra             // extras[idx]
)

// segment is a piece of the backend path: literal text or a [name] to fill in.
type segment struct {
	kind segKind
	lit  string
	idx  int
}

// Plan is one API's verification and conversion, compiled from its definition. It is
// immutable and safe for concurrent use; compile a new one per config version.
type Plan struct {
	params      []param
	declared    bool // the API declares parameters: undeclared ones are dropped
	passthrough bool
	guard       bool
	byIn        [locForm + 1][]int // indexes of params by where the client sends them
	extras      []extra
	// rewrite[l]: something is always written into or moved out of location l (query
	// or form), so it is re-encoded on every request.
	rewrite  [locForm + 1]bool
	reserved [locForm + 1][]string // names extras own: a client's values for them are dropped
	segments []segment
	// pathGuard holds, per router path value, the injection errors naming it.
	pathGuard [][2]*Error
	// pathDots holds, per router path value, the error for a "." or ".." value.
	pathDots    []*Error
	schema      *jsonschema.Schema
	errBodyType *Error
	errBodyNone *Error
	errBodyJSON *Error
	errFormBody *Error
}

// Compile builds the Plan of def. pathParamNames are the [name] segments of def.Path
// in order: the router hands Apply their decoded values in that order. An error says
// which parameter, mapping, constant or system parameter is wrong and why; Compile is
// the validator of an API's parameter model.
func Compile(def *fsm.APIDef, pathParamNames []string) (*Plan, error) {
	p := &Plan{
		declared:    len(def.Params) > 0,
		passthrough: def.Passthrough,
		guard:       slices.Contains(def.Guard, "injection"),
		errBodyType: newError(KindBody, "", "content type must be application/json"),
		errBodyNone: newError(KindBody, "", "empty"),
		errBodyJSON: newError(KindBody, "", "not JSON"),
		errFormBody: newError(KindBody, "", "form parameters need an application/x-www-form-urlencoded body"),
	}
	byName := map[string]int{}
	for i := range def.Params {
		cp, err := compileParam(&def.Params[i], pathParamNames, p.guard)
		if err != nil {
			return nil, fmt.Errorf("param %q: %w", def.Params[i].Name, err)
		}
		if _, dup := byName[cp.name]; dup {
			return nil, fmt.Errorf("param %q: declared twice", cp.name)
		}
		if cp.in == locHeader {
			for _, j := range p.byIn[locHeader] {
				if p.params[j].key == cp.key {
					return nil, fmt.Errorf("param %q: header declared twice (as %q)", cp.name, p.params[j].name)
				}
			}
		}
		byName[cp.name] = len(p.params)
		p.byIn[cp.in] = append(p.byIn[cp.in], len(p.params))
		p.params = append(p.params, cp)
	}
	if err := p.compileBackend(def, byName); err != nil {
		return nil, err
	}
	if err := p.compileSegments(def, pathParamNames); err != nil {
		return nil, err
	}
	p.pathDots = make([]*Error, len(pathParamNames))
	for i, n := range pathParamNames {
		p.pathDots[i] = newError(KindInvalid, n, "path segment")
	}
	if p.guard {
		p.pathGuard = make([][2]*Error, len(pathParamNames))
		for i, n := range pathParamNames {
			p.pathGuard[i] = [2]*Error{newError(KindInjection, n, "sql injection"), newError(KindInjection, n, "xss")}
		}
	}
	if def.Body != nil && def.Body.Schema != "" {
		if len(p.byIn[locForm]) > 0 || p.rewrite[locForm] {
			return nil, errors.New("body: a JSON Schema body cannot also carry form parameters")
		}
		sch, err := compileSchema(string(def.Body.Schema))
		if err != nil {
			return nil, fmt.Errorf("body.schema: %w", err)
		}
		p.schema = sch
	}
	return p, nil
}

func compileParam(d *fsm.Param, pathParamNames []string, guard bool) (param, error) {
	cp := param{name: d.Name, key: d.Name, required: d.Required, pathIdx: -1}
	if d.Name == "" {
		return cp, errors.New("name is empty")
	}
	in, ok := parseLocation(d.In)
	if !ok {
		return cp, fmt.Errorf("in %q: want path, query, header or form", d.In)
	}
	cp.in, cp.out, cp.outName, cp.same = in, in, d.Name, true
	switch in {
	case locHeader:
		cp.key = strings.ToLower(d.Name)
	case locPath:
		cp.pathIdx = slices.Index(pathParamNames, d.Name)
		if cp.pathIdx < 0 {
			return cp, fmt.Errorf("path parameter is not a [%s] segment of the path", d.Name)
		}
	}
	c := &cp.chk
	c.minLen, c.maxLen = -1, -1
	typ := d.Type
	if typ == "array" {
		c.array = true
		typ = d.Items
		if typ == "array" {
			return cp, errors.New("items: arrays of arrays are not supported")
		}
	} else if d.Items != "" {
		return cp, fmt.Errorf("items %q: only an array has items", d.Items)
	}
	t, ok := typeNames[typ]
	if !ok {
		if c.array {
			return cp, fmt.Errorf("items %q: want string, int, long, float, double or boolean", typ)
		}
		return cp, fmt.Errorf("type %q: want string, int, long, float, double, boolean or array", typ)
	}
	c.typ = t
	typeRule := "type " + typeName(t)
	if c.array {
		typeRule = "type array of " + typeName(t)
	}
	c.errType = newError(KindInvalid, d.Name, typeRule)
	if d.Min != nil || d.Max != nil {
		if !t.numeric() {
			return cp, errors.New("min and max bound numbers; use minLength and maxLength for text")
		}
	}
	if d.Min != nil {
		c.hasMin, c.min = true, *d.Min
		c.errMin = newError(KindInvalid, d.Name, "min "+formatNumber(*d.Min))
	}
	if d.Max != nil {
		c.hasMax, c.max = true, *d.Max
		c.errMax = newError(KindInvalid, d.Name, "max "+formatNumber(*d.Max))
	}
	if c.hasMin && c.hasMax && c.min > c.max {
		return cp, errors.New("min is above max")
	}
	if d.MinLength != nil {
		if *d.MinLength < 0 {
			return cp, errors.New("minLength is negative")
		}
		c.minLen = *d.MinLength
		c.errMinLen = newError(KindInvalid, d.Name, "minLength "+strconv.Itoa(c.minLen))
	}
	if d.MaxLength != nil {
		if *d.MaxLength < 0 {
			return cp, errors.New("maxLength is negative")
		}
		c.maxLen = *d.MaxLength
		c.errMaxLen = newError(KindInvalid, d.Name, "maxLength "+strconv.Itoa(c.maxLen))
	}
	if c.minLen >= 0 && c.maxLen >= 0 && c.minLen > c.maxLen {
		return cp, errors.New("minLength is above maxLength")
	}
	if d.Regex != "" {
		re, err := regexp.Compile(d.Regex)
		if err != nil {
			return cp, fmt.Errorf("regex: %v", err)
		}
		c.re = re
		c.reClass = compileByteClass(d.Regex)
		c.errRegex = newError(KindInvalid, d.Name, "regex "+d.Regex)
	}
	if len(d.Enum) > 0 {
		for _, e := range d.Enum {
			// Only the type: an enum that the other rules exclude is the provider's
			// business, but one that can never parse is a mistake.
			if (&checker{typ: t, minLen: -1, maxLen: -1, errType: c.errType}).check([]byte(e)) != nil {
				return cp, fmt.Errorf("enum value %q is not of type %s", e, typeName(t))
			}
		}
		c.enum = slices.Clone(d.Enum)
		if len(c.enum) >= enumMapFrom {
			c.enumSet = make(map[string]struct{}, len(c.enum))
			for _, e := range c.enum {
				c.enumSet[e] = struct{}{}
			}
		}
		c.errEnum = newError(KindInvalid, d.Name, "enum "+strings.Join(d.Enum, ","))
	}
	if d.Default != nil {
		// Checked without the guard: the provider wrote it, and a default such as
		// "1 or 2" must not fail on an injection heuristic.
		if err := c.checkValue([]byte(*d.Default)); err != nil {
			return cp, fmt.Errorf("default %q breaks its own rule: %s", *d.Default, err.Rule)
		}
		cp.def = []byte(*d.Default)
	}
	if guard {
		c.guard = true
		c.errSQLi = newError(KindInjection, d.Name, "sql injection")
		c.errXSS = newError(KindInjection, d.Name, "xss")
	}
	cp.errMissing = newError(KindMissing, d.Name, "")
	return cp, nil
}

func typeName(t valueType) string {
	for n, v := range typeNames {
		if v == t && n != "" {
			return n
		}
	}
	return "string"
}

// formatNumber writes a bound as the provider would: 100, 1.5, -3.
func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// framingHeaders decide how the backend reads the message or where it goes; a value
// mapped into one could smuggle a second request or redirect this one.
var framingHeaders = map[string]struct{}{
	"host": {}, "content-length": {}, "transfer-encoding": {}, "connection": {},
	"te": {}, "upgrade": {}, "trailer": {}, "keep-alive": {}, "expect": {},
}

// targetKey identifies a backend location and name; header names compare in lower case.
func targetKey(in location, name string) string {
	if in == locHeader {
		name = strings.ToLower(name)
	}
	return in.String() + ":" + name
}

func (p *Plan) compileBackend(def *fsm.APIDef, byName map[string]int) error {
	mapped := map[string]bool{}
	for _, m := range def.Backend.Map {
		i, ok := byName[m.Param]
		if !ok {
			return fmt.Errorf("backend.map %q: no such declared param", m.Param)
		}
		if mapped[m.Param] {
			return fmt.Errorf("backend.map %q: mapped twice", m.Param)
		}
		mapped[m.Param] = true
		cp := &p.params[i]
		if m.In != "" {
			out, ok := parseLocation(m.In)
			if !ok {
				return fmt.Errorf("backend.map %q: in %q: want path, query, header or form", m.Param, m.In)
			}
			cp.out = out
		}
		if m.Name != "" {
			cp.outName = m.Name
		}
		switch {
		case cp.out != cp.in:
			cp.same = false
		case cp.in == locHeader:
			cp.same = strings.EqualFold(cp.outName, cp.name)
		default:
			cp.same = cp.outName == cp.name
		}
	}
	targets := map[string]string{}
	claim := func(in location, name, what string) error {
		if name == "" {
			return fmt.Errorf("%s: backend name is empty", what)
		}
		if in == locHeader {
			if _, ok := framingHeaders[strings.ToLower(name)]; ok {
				return fmt.Errorf("%s: header %s frames the message and cannot be written", what, name)
			}
		}
		k := targetKey(in, name)
		if prev, ok := targets[k]; ok {
			return fmt.Errorf("%s: backend %s %q is already written by %s", what, in, name, prev)
		}
		targets[k] = what
		return nil
	}
	for i := range p.params {
		cp := &p.params[i]
		if err := claim(cp.out, cp.outName, fmt.Sprintf("param %q", cp.name)); err != nil {
			return err
		}
		if cp.out == locPath {
			cp.errSegment = newError(KindInvalid, cp.name, "path segment")
		}
		if !cp.same && (cp.in == locQuery || cp.in == locForm) {
			p.rewrite[cp.in] = true // it has to be taken out
		}
		if !cp.same && (cp.out == locQuery || cp.out == locForm) {
			p.rewrite[cp.out] = true // it has to be put in
		}
	}
	for _, c := range def.Backend.Constants {
		what := fmt.Sprintf("constant %q", c.Name)
		in, ok := parseLocation(c.In)
		if !ok {
			return fmt.Errorf("%s: in %q: want path, query, header or form", what, c.In)
		}
		if err := claim(in, c.Name, what); err != nil {
			return err
		}
		p.extras = append(p.extras, extra{in: in, name: c.Name, value: []byte(c.Value)})
	}
	for _, s := range def.Backend.System {
		what := fmt.Sprintf("system %q", s.Param)
		id, ok := systemNames[s.Param]
		if !ok {
			return fmt.Errorf("%s: unknown system parameter (want one of CaClientIp, CaRequestId, CaAppId, CaAppKey, CaApiName, CaStage, CaDomain, CaHttpSchema, CaRequestHandleTime, CaProxy)", what)
		}
		in, ok := parseLocation(s.In)
		if !ok {
			return fmt.Errorf("%s: in %q: want path, query, header or form", what, s.In)
		}
		name := s.Name
		if name == "" {
			name = s.Param
		}
		if err := claim(in, name, what); err != nil {
			return err
		}
		p.extras = append(p.extras, extra{in: in, name: name, sys: id, isSys: true})
	}
	for _, e := range p.extras {
		if e.in == locQuery || e.in == locForm {
			p.rewrite[e.in] = true
			p.reserved[e.in] = append(p.reserved[e.in], e.name)
		}
	}
	return nil
}

// compileSegments splits the backend path (the frontend path when the backend names
// none) into literals and [name] segments, each bound to where its value comes from.
func (p *Plan) compileSegments(def *fsm.APIDef, pathParamNames []string) error {
	path := def.Backend.Path
	if path == "" {
		path = def.Path
	}
	for len(path) > 0 {
		open := strings.IndexByte(path, '[')
		if open < 0 {
			p.segments = append(p.segments, segment{kind: segLiteral, lit: path})
			break
		}
		if open > 0 {
			p.segments = append(p.segments, segment{kind: segLiteral, lit: path[:open]})
		}
		end := strings.IndexByte(path[open:], ']')
		if end < 0 {
			return fmt.Errorf("backend.path %q: [ without ]", def.Backend.Path)
		}
		name := path[open+1 : open+end]
		seg, err := p.bindSegment(name, pathParamNames)
		if err != nil {
			return err
		}
		p.segments = append(p.segments, seg)
		path = path[open+end+1:]
	}
	return nil
}

func (p *Plan) bindSegment(name string, pathParamNames []string) (segment, error) {
	for i := range p.params {
		if p.params[i].out == locPath && p.params[i].outName == name {
			return segment{kind: segParam, idx: i}, nil
		}
	}
	if i := slices.Index(pathParamNames, name); i >= 0 {
		return segment{kind: segPathValue, idx: i}, nil
	}
	for i := range p.extras {
		if p.extras[i].in == locPath && p.extras[i].name == name {
			return segment{kind: segExtra, idx: i}, nil
		}
	}
	return segment{}, fmt.Errorf("backend.path: [%s] is neither a path parameter nor a parameter, constant or system parameter mapped to the path", name)
}

// noLoader refuses every $ref to a document outside the schema: a provider's schema
// must not make the gateway read its own files or fetch URLs.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("$ref %s: external schemas are not loaded", url)
}

const schemaURL = "https://tollgate.invalid/body.schema.json"

func compileSchema(doc string) (*jsonschema.Schema, error) {
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(noLoader{})
	if err := c.AddResource(schemaURL, v); err != nil {
		return nil, err
	}
	return c.Compile(schemaURL)
}
