package proxy

import (
	"bytes"
	"fmt"
	"net/url"
	"strings"
)

// maxParams bounds the path parameters of one API, so a request's captures fit a fixed
// array in its Call and the lookup never allocates.
const maxParams = 16

// Methods an API may name; ANY matches every method, these and others. The index of a
// method is its slot in an endpoint.
var methodNames = [...]string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}

const nMethods = len(methodNames)

// methodIndex returns the slot of a request method, or -1 for a method no API can name
// exactly (only ANY matches it). The switch on string(m) does not allocate.
func methodIndex(m []byte) int {
	switch string(m) {
	case "GET":
		return 0
	case "POST":
		return 1
	case "PUT":
		return 2
	case "DELETE":
		return 3
	case "PATCH":
		return 4
	case "HEAD":
		return 5
	case "OPTIONS":
		return 6
	}
	return -1
}

// segment is one piece of a path pattern: a literal (decoded) or a [param].
type segment struct {
	lit   string
	param string // non-empty for a [param] segment
}

// parsePattern splits an API path such as /cities/[city] into segments.
//
// Matching rules (also in doc.go): segments are compared after percent-decoding, on both
// sides, so /caf%C3%A9 and /café are the same pattern; an empty trailing segment is
// ignored, so "/a/" and "/a" are the same pattern and match both request paths; a
// segment is a parameter only when it is exactly "[name]".
func parsePattern(p string) ([]segment, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path %q must start with /", p)
	}
	p = strings.TrimSuffix(p[1:], "/")
	if p == "" {
		return nil, nil
	}
	var segs []segment
	seen := map[string]bool{}
	for _, s := range strings.Split(p, "/") {
		if s == "" {
			return nil, fmt.Errorf("path %q has an empty segment", "/"+p)
		}
		if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			name := s[1 : len(s)-1]
			if strings.ContainsAny(name, "[]") {
				return nil, fmt.Errorf("path parameter %q is malformed", s)
			}
			if seen[name] {
				return nil, fmt.Errorf("path parameter %q appears twice", name)
			}
			seen[name] = true
			segs = append(segs, segment{param: name})
			continue
		}
		if strings.ContainsAny(s, "[]") {
			return nil, fmt.Errorf("segment %q: a parameter must be a whole segment like [name]", s)
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, fmt.Errorf("segment %q: %v", s, err)
		}
		segs = append(segs, segment{lit: d})
	}
	if len(seen) > maxParams {
		return nil, fmt.Errorf("path %q has %d parameters, at most %d are allowed", "/"+p, len(seen), maxParams)
	}
	return segs, nil
}

// node is a trie node: one level of path segments. Static children beat the parameter
// child; when a static branch fails deeper down the lookup backtracks into the
// parameter branch.
type node struct {
	static map[string]*node
	param  *node
	ep     *endpoint
}

// endpoint holds the routes of one path pattern, by method.
type endpoint struct {
	byMethod [nMethods]*Route
	any      *Route
	allow    string // Allow header value for 405: the methods accepted here
	mask     uint8  // the methods accepted here, by index
}

func (e *endpoint) pick(m int) *Route {
	if m >= 0 {
		if r := e.byMethod[m]; r != nil {
			return r // an exact method beats ANY
		}
	}
	return e.any
}

// router matches method and decoded path to a Route for one group in one stage. It is
// built once per config version and read-only afterwards, so lookups need no lock.
type router struct {
	root node
	n    int
}

// add inserts r under method (a methodNames entry or "ANY") and pattern. It fails when
// the same method and pattern are already taken.
func (t *router) add(method string, segs []segment, r *Route) error {
	if prev := t.insert(method, segs, r); prev != nil {
		if prev == r {
			return fmt.Errorf("unknown method %q", method)
		}
		return fmt.Errorf("%s %s is already taken by %s", method, patternString(segs), prev.API)
	}
	return nil
}

// insert places r and returns nil, or the route already holding the slot (r itself for
// an unknown method). It formats nothing, so rebuilding a large table stays cheap.
func (t *router) insert(method string, segs []segment, r *Route) *Route {
	n := &t.root
	for _, s := range segs {
		if s.param != "" {
			if n.param == nil {
				n.param = &node{}
			}
			n = n.param
			continue
		}
		if n.static == nil {
			n.static = map[string]*node{}
		}
		c := n.static[s.lit]
		if c == nil {
			c = &node{}
			n.static[s.lit] = c
		}
		n = c
	}
	if n.ep == nil {
		n.ep = &endpoint{}
	}
	ep := n.ep
	if method == "ANY" {
		if ep.any != nil {
			return ep.any
		}
		ep.any = r
		ep.mask |= 1<<nMethods - 1
	} else {
		m := methodIndex([]byte(method))
		if m < 0 {
			return r
		}
		if ep.byMethod[m] != nil {
			return ep.byMethod[m]
		}
		ep.byMethod[m] = r
		ep.mask |= 1 << m
	}
	ep.allow = allowHeaders[ep.mask]
	t.n++
	return nil
}

// allowHeaders holds the Allow value for every set of methods, built once, so that
// endpoints share the strings.
var allowHeaders = func() (a [1 << nMethods]string) {
	for mask := range a {
		var ms []string
		for i, m := range methodNames {
			if mask&(1<<i) != 0 {
				ms = append(ms, m)
			}
		}
		a[mask] = strings.Join(ms, ", ")
	}
	return a
}()

func patternString(segs []segment) string {
	if len(segs) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, s := range segs {
		b.WriteByte('/')
		if s.param != "" {
			b.WriteString("[" + s.param + "]")
		} else {
			b.WriteString(s.lit)
		}
	}
	return b.String()
}

// params holds the values captured by a lookup, in pattern order. Values point into the
// path the lookup was given.
type params struct {
	v [maxParams][]byte
	n int
}

// lookup finds the route for method m (from methodIndex) and a decoded path starting
// with '/'. When no route matches but some pattern matches the path, it returns that
// pattern's endpoint so the caller can answer 405 with an Allow header. It does not
// allocate.
func (t *router) lookup(m int, path []byte, ps *params) (*Route, *endpoint) {
	ps.n = 0
	if len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	var near *endpoint
	r := t.root.find(path, m, ps, &near)
	return r, near
}

func (n *node) find(path []byte, m int, ps *params, near **endpoint) *Route {
	if len(path) == 0 {
		if n.ep == nil {
			return nil
		}
		if r := n.ep.pick(m); r != nil {
			return r
		}
		if *near == nil {
			*near = n.ep
		}
		return nil
	}
	seg, rest := path, path[len(path):]
	if i := bytes.IndexByte(path, '/'); i >= 0 {
		seg, rest = path[:i], path[i+1:]
	}
	if n.static != nil {
		if c := n.static[string(seg)]; c != nil {
			if r := c.find(rest, m, ps, near); r != nil {
				return r
			}
		}
	}
	if n.param != nil && len(seg) > 0 && ps.n < maxParams {
		k := ps.n
		ps.v[k] = seg
		ps.n++
		if r := n.param.find(rest, m, ps, near); r != nil {
			return r
		}
		ps.n = k
	}
	return nil
}
