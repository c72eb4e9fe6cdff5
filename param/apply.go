package param

import (
	"bytes"
	"errors"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/valyala/fasthttp"
)

// slot holds the values a request gave one declared parameter, copied out of the
// request so that rewriting the request cannot change them under us.
type slot struct {
	buf       []byte
	ends      []int // end offset in buf of each value
	defaulted bool
}

func (sl *slot) n() int { return len(sl.ends) }

func (sl *slot) value(j int) []byte {
	start := 0
	if j > 0 {
		start = sl.ends[j-1]
	}
	return sl.buf[start:sl.ends[j]]
}

// Scratch is the per-request working memory of Apply and BackendPath. Its zero value
// is ready; reuse one (from a sync.Pool) so that requests allocate nothing once its
// buffers have grown. A Scratch serves one request at a time: BackendPath reads what
// the last Apply left in it.
type Scratch struct {
	slots   []slot
	query   fasthttp.Args // the rebuilt query
	form    fasthttp.Args // the rebuilt form body
	del     fasthttp.Args // names of headers to drop
	buf     []byte
	joined  []byte
	dirty   [locForm + 1]bool // an undeclared or reserved value was seen there
	written [locForm + 1]bool // a default was written there
}

func (s *Scratch) reset(n int) {
	if cap(s.slots) < n {
		s.slots = append(s.slots[:cap(s.slots)], make([]slot, n-cap(s.slots))...)
	}
	s.slots = s.slots[:n]
	for i := range s.slots {
		sl := &s.slots[i]
		sl.buf, sl.ends, sl.defaulted = sl.buf[:0], sl.ends[:0], false
	}
	s.del.Reset()
	s.dirty = [locForm + 1]bool{}
	s.written = [locForm + 1]bool{}
}

func (s *Scratch) add(i int, v []byte) {
	sl := &s.slots[i]
	sl.buf = append(sl.buf, v...)
	sl.ends = append(sl.ends, len(sl.buf))
}

// join returns the values of slot i separated by commas: how a header or a path
// segment carries several values.
func (s *Scratch) join(i int) []byte {
	sl := &s.slots[i]
	if sl.n() == 1 {
		return sl.buf
	}
	s.joined = s.joined[:0]
	for j := 0; j < sl.n(); j++ {
		if j > 0 {
			s.joined = append(s.joined, ',')
		}
		s.joined = append(s.joined, sl.value(j)...)
	}
	return s.joined
}

const formType = "application/x-www-form-urlencoded"

var formContentType = []byte(formType)

func isForm(req *fasthttp.Request) bool {
	ct := req.Header.ContentType()
	return len(ct) >= len(formType) && bytesEqualFold(ct[:len(formType)], formType)
}

// ReadsBody reports whether Apply reads the request body (a form or a JSON Schema), so
// a proxy that streams bodies knows to read this one whole first.
func (p *Plan) ReadsBody() bool {
	return p.schema != nil || len(p.byIn[locForm]) > 0 || p.rewrite[locForm] ||
		(p.declared && !p.passthrough) || p.guard
}

// Apply verifies req against the plan and rewrites it, in place, into the backend
// request: undeclared parameters dropped, mapped ones moved, defaults, constants and
// system parameters written. pathValues are the decoded values of the path's [name]
// segments in the order given to Compile; sys may be nil. On error nothing useful is
// left in req: answer 400 with the Error. Apply never touches the request's path,
// method or host; see BackendPath. It does not allocate for scalar parameters once s
// has grown, except to check a JSON Schema or to name an undeclared parameter that
// fails the injection guard.
func (p *Plan) Apply(req *fasthttp.Request, pathValues [][]byte, sys *System, s *Scratch) *Error {
	s.reset(len(p.params))
	if err := p.collect(req, pathValues, s); err != nil {
		return err
	}
	for i := range p.params {
		cp := &p.params[i]
		sl := &s.slots[i]
		if sl.n() == 0 {
			if cp.def != nil {
				s.add(i, cp.def) // validated by Compile
				sl.defaulted = true
				s.written[cp.out] = true
			} else if cp.required {
				return cp.errMissing
			}
			continue
		}
		for j := 0; j < sl.n(); j++ {
			if err := cp.chk.checkValue(sl.value(j)); err != nil {
				return err
			}
		}
		if cp.errSegment != nil && dotSegment(s.join(i)) {
			return cp.errSegment
		}
	}
	if p.schema != nil {
		if err := p.checkBody(req); err != nil {
			return err
		}
	}
	p.writeHeaders(req, sys, s)
	if p.rewrite[locQuery] || s.dirty[locQuery] || s.written[locQuery] {
		s.query.Reset()
		p.rebuild(&s.query, req.URI().QueryArgs(), locQuery, sys, s)
		s.buf = s.query.AppendBytes(s.buf[:0])
		req.URI().SetQueryStringBytes(s.buf)
	}
	form := isForm(req)
	if (form && s.dirty[locForm]) || p.rewrite[locForm] || s.written[locForm] {
		if !form {
			if len(req.Body()) > 0 {
				return p.errFormBody
			}
			req.Header.SetContentTypeBytes(formContentType)
		}
		s.form.Reset()
		if form {
			p.rebuild(&s.form, req.PostArgs(), locForm, sys, s)
		} else {
			p.rebuild(&s.form, nil, locForm, sys, s)
		}
		s.buf = s.form.AppendBytes(s.buf[:0])
		req.SetBody(s.buf)
	}
	return nil
}

// collect copies every declared parameter's values out of req into s, notes where
// undeclared values must be dropped, and runs the injection guard over values no
// declaration covers.
func (p *Plan) collect(req *fasthttp.Request, pathValues [][]byte, s *Scratch) *Error {
	for _, i := range p.byIn[locPath] {
		if idx := p.params[i].pathIdx; idx < len(pathValues) {
			s.add(i, pathValues[idx])
		}
	}
	for i, v := range pathValues {
		// A router that matched on the raw path could hand us "..": as a backend
		// segment it would climb out of the backend's path.
		if i < len(p.pathDots) && dotSegment(v) {
			return p.pathDots[i]
		}
	}
	if p.guard {
		for i, v := range pathValues {
			if i < len(p.pathGuard) {
				if err := guardValue(v, p.pathGuard[i][0], p.pathGuard[i][1]); err != nil {
					return err
				}
			}
		}
	}
	dropUndeclared := p.declared && !p.passthrough
	if p.declared || p.guard || p.reserved[locQuery] != nil {
		if err := p.collectArgs(req.URI().QueryArgs(), locQuery, dropUndeclared, s); err != nil {
			return err
		}
	}
	if (p.declared || p.guard || p.reserved[locForm] != nil) && isForm(req) {
		if err := p.collectArgs(req.PostArgs(), locForm, dropUndeclared, s); err != nil {
			return err
		}
	}
	if len(p.byIn[locHeader]) > 0 || dropUndeclared {
		for k, v := range req.Header.All() {
			if i := p.find(locHeader, k); i >= 0 {
				s.add(i, v)
			} else if dropUndeclared && !StandardHeader(k) {
				s.del.AddBytesKNoValue(k) // deleted after the walk: All forbids changes
			}
		}
	}
	return nil
}

func (p *Plan) collectArgs(args *fasthttp.Args, in location, dropUndeclared bool, s *Scratch) *Error {
	for k, v := range args.All() {
		if i := p.find(in, k); i >= 0 {
			s.add(i, v)
			continue
		}
		if dropUndeclared || p.isReserved(in, k) {
			s.dirty[in] = true
		}
		if p.guard {
			if err := guardValue(v, nil, nil); err != nil {
				// An undeclared name has no prebuilt error: naming it costs one
				// allocation, on a request we refuse anyway.
				return newError(KindInjection, string(k), err.Rule)
			}
		}
	}
	return nil
}

var (
	errSQLi = &Error{Kind: KindInjection, Rule: "sql injection"}
	errXSS  = &Error{Kind: KindInjection, Rule: "xss"}
)

// guardValue runs the injection detectors over a value no declaration covers.
func guardValue(v []byte, sqli, xss *Error) *Error {
	if sqli == nil {
		sqli, xss = errSQLi, errXSS
	}
	c := checker{errSQLi: sqli, errXSS: xss}
	return c.injection(v)
}

// find returns the declared parameter the client sends at in under name k, or -1.
// A linear scan: an API has a handful of parameters per location, and comparing a
// few short strings beats hashing.
func (p *Plan) find(in location, k []byte) int {
	for _, i := range p.byIn[in] {
		if in == locHeader {
			if bytesEqualFold(k, p.params[i].key) {
				return i
			}
		} else if string(k) == p.params[i].key {
			return i
		}
	}
	return -1
}

func (p *Plan) isReserved(in location, k []byte) bool {
	for _, n := range p.reserved[in] {
		if string(k) == n {
			return true
		}
	}
	return false
}

// rebuild writes into dst the query or form the backend gets: the received values
// that stay, undeclared ones when they pass, then moved values, defaults, constants
// and system parameters.
func (p *Plan) rebuild(dst, src *fasthttp.Args, in location, sys *System, s *Scratch) {
	keepUndeclared := !p.declared || p.passthrough
	if src != nil {
		for k, v := range src.All() {
			if i := p.find(in, k); i >= 0 {
				if p.params[i].same {
					dst.AddBytesKV(k, v)
				}
			} else if keepUndeclared && !p.isReserved(in, k) {
				dst.AddBytesKV(k, v)
			}
		}
	}
	for i := range p.params {
		cp := &p.params[i]
		sl := &s.slots[i]
		if cp.out != in || (cp.same && !sl.defaulted) {
			continue
		}
		for j := 0; j < sl.n(); j++ {
			v := sl.value(j)
			if !cp.chk.array {
				dst.AddBytesV(cp.outName, v)
				continue
			}
			for len(v) > 0 {
				item := v
				if c := bytes.IndexByte(v, ','); c >= 0 {
					item, v = v[:c], v[c+1:]
				} else {
					v = nil
				}
				dst.AddBytesV(cp.outName, item)
			}
		}
	}
	for i := range p.extras {
		if e := &p.extras[i]; e.in == in {
			dst.AddBytesV(e.name, e.get(sys))
		}
	}
}

// writeHeaders drops undeclared and moved-out headers, then writes moved-in values,
// defaults, constants and system parameters (Set: they replace what the client sent).
func (p *Plan) writeHeaders(req *fasthttp.Request, sys *System, s *Scratch) {
	for k := range s.del.All() {
		req.Header.DelBytes(k)
	}
	for _, i := range p.byIn[locHeader] {
		if !p.params[i].same {
			req.Header.Del(p.params[i].name)
		}
	}
	for i := range p.params {
		cp := &p.params[i]
		sl := &s.slots[i]
		if cp.out != locHeader || sl.n() == 0 || (cp.same && !sl.defaulted) {
			continue
		}
		req.Header.SetBytesV(cp.outName, s.join(i))
	}
	for i := range p.extras {
		if e := &p.extras[i]; e.in == locHeader {
			req.Header.SetBytesV(e.name, e.get(sys))
		}
	}
}

// checkBody validates a JSON body against the compiled schema. Decoding JSON into
// Go values allocates; only APIs that declare a schema pay for it.
func (p *Plan) checkBody(req *fasthttp.Request) *Error {
	if !isJSON(req.Header.ContentType()) {
		return p.errBodyType
	}
	body := req.Body()
	if len(bytes.TrimSpace(body)) == 0 {
		return p.errBodyNone
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return p.errBodyJSON
	}
	if err := p.schema.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			for len(ve.Causes) > 0 {
				ve = ve.Causes[0]
			}
			return newError(KindBody, "", ve.Error())
		}
		return newError(KindBody, "", err.Error())
	}
	return nil
}

// isJSON accepts application/json and any application/*+json media type.
func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = bytes.TrimSpace(ct)
	if bytesEqualFold(ct, "application/json") {
		return true
	}
	return len(ct) > len("application/+json") && bytesEqualFold(ct[:12], "application/") &&
		bytesEqualFold(ct[len(ct)-5:], "+json")
}

// BackendPath appends to dst the backend path with each [name] segment replaced by its
// value, percent-encoded as one path segment: a parameter mapped to the path (its
// values joined by commas), else the frontend path value of that name, else a
// constant or system parameter. It reads the values the last Apply left in s, so call
// it after a successful Apply with the same s and pathValues. An absent optional
// parameter leaves its segment empty. Literal parts are copied as written in the
// definition. To send the result unchanged, set it with fasthttp's URI.SetPathBytes
// and DisablePathNormalizing, or in the request URI: fasthttp's normalizing would
// decode %2F back into a separator.
func (p *Plan) BackendPath(dst []byte, pathValues [][]byte, sys *System, s *Scratch) []byte {
	for _, seg := range p.segments {
		switch seg.kind {
		case segLiteral:
			dst = append(dst, seg.lit...)
		case segPathValue:
			if seg.idx < len(pathValues) {
				dst = appendSegment(dst, pathValues[seg.idx])
			}
		case segParam:
			if seg.idx < len(s.slots) && s.slots[seg.idx].n() > 0 {
				dst = appendSegment(dst, s.join(seg.idx))
			}
		case segExtra:
			dst = appendSegment(dst, p.extras[seg.idx].get(sys))
		}
	}
	return dst
}

// dotSegment reports a value that, as a path segment, would climb the backend's path:
// percent-encoding does not help, as URL parsers read %2E%2E as "..".
func dotSegment(v []byte) bool {
	return string(v) == "." || string(v) == ".."
}

const upperhex = "0123456789ABCDEF"

// appendSegment percent-encodes v as a path segment: unreserved characters and the
// sub-delimiters backends read literally stay, '/', '?', '#', '%', space, '+', '&' and
// everything else are encoded, so a value can neither add a segment nor start a query.
func appendSegment(dst, v []byte) []byte {
	for _, c := range v {
		if segmentSafe(c) {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', upperhex[c>>4], upperhex[c&15])
		}
	}
	return dst
}

func segmentSafe(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '\'', '(', ')', '*', ',', ';', '=', ':', '@':
		return true
	}
	return false
}
