package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/fsm"
)

// Error is one problem in a file. Line is 1-based, 0 when unknown; Path is the field
// with its YAML names (groups[0].apis[1].backend.url), empty for syntax errors.
type Error struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// Error formats the problem as FILE:LINE: PATH: message.
func (e Error) Error() string {
	var sb strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&sb, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		sb.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&sb, "line %d: ", e.Line)
	}
	if e.Path != "" {
		sb.WriteString(e.Path)
		sb.WriteString(": ")
	}
	sb.WriteString(e.Message)
	return sb.String()
}

// ErrorList is every problem found in a file, sorted by line. Parse returns one
// whenever the file is refused.
type ErrorList []Error

// Error lists the problems one per line.
func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// MaxErrors is how many problems Parse lists; past that the rest are summarised, as
// a file that wrong is better fixed from the top.
const MaxErrors = 100

func (l ErrorList) sort() {
	sort.SliceStable(l, func(i, j int) bool { return l[i].Line < l[j].Line })
}

// truncated keeps the first MaxErrors problems and counts the rest, with dropped
// ones never recorded.
func (l ErrorList) truncated(dropped int) ErrorList {
	if len(l) <= MaxErrors && dropped == 0 {
		return l
	}
	n := min(len(l), MaxErrors)
	more := Error{File: l[0].File, Message: fmt.Sprintf("and %d more problems", len(l)-n+dropped)}
	return append(l[:n:n], more)
}

// Load reads and parses the file at path; errors name the path as given.
func Load(path string) (*fsm.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes a declarative file and validates it. filename is only used in error
// messages. On any problem it returns nil and an ErrorList naming the line and field
// of every problem: YAML syntax, unknown fields, duplicate keys, wrong types, then
// (only if the file decoded) every rule of fsm.Bundle.Validate.
func Parse(filename string, data []byte) (*fsm.Bundle, error) {
	doc, err := parseNode(data)
	if err != nil {
		return nil, ErrorList{syntaxError(filename, err)}
	}
	c := &checker{file: filename}
	root := deref(doc.Content[0])
	if root.Kind == yaml.MappingNode {
		root = withoutExtensions(root)
	}
	c.walk(root, bundleType, "")
	if len(c.errs) > 0 {
		c.errs.sort()
		return nil, c.errs.truncated(c.dropped)
	}
	b := new(fsm.Bundle)
	if err := root.Decode(b); err != nil {
		// The checker mirrors the decoder, so this is a bug here, not in the file;
		// still report it against the file rather than panic.
		return nil, ErrorList{syntaxError(filename, err)}
	}
	if err := b.Validate(); err != nil {
		var ve *fsm.ValidationError
		if !errors.As(err, &ve) {
			return nil, ErrorList{{File: filename, Message: err.Error()}}
		}
		return nil, locateAll(filename, doc, ve.Errors).truncated(0)
	}
	return b, nil
}

// Locate returns the line of the node at path (as in fsm.FieldError.Path) in the
// YAML document data, or of its nearest existing parent when the field is absent
// (a required field left out points at its parent). It returns 0 when data does not
// parse. Use LocateAll to place many errors: it parses data once.
func Locate(data []byte, path string) (line int) {
	doc, err := parseNode(data)
	if err != nil {
		return 0
	}
	return locate(doc, path)
}

// LocateAll turns field errors (from fsm.Bundle.Validate, or returned by the admin
// API for a bundle read from data) into an ErrorList with lines, sorted by line.
func LocateAll(filename string, data []byte, errs []fsm.FieldError) ErrorList {
	doc, err := parseNode(data)
	if err != nil {
		doc = nil
	}
	return locateAll(filename, doc, errs)
}

func locateAll(filename string, doc *yaml.Node, errs []fsm.FieldError) ErrorList {
	l := make(ErrorList, len(errs))
	for i, fe := range errs {
		line := 0
		if doc != nil {
			line = locate(doc, fe.Path)
		}
		l[i] = Error{File: filename, Line: line, Path: fe.Path, Message: fe.Message}
	}
	l.sort()
	return l
}

// Marshal writes a bundle as YAML in the file's own format, so an exported bundle can
// be edited and applied again.
func Marshal(b *fsm.Bundle) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(b); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// withoutExtensions drops top-level keys starting with "x-": they hold anchors for
// the rest of the file to merge (<<: *backend), as in Docker Compose, and are not
// part of the bundle.
func withoutExtensions(m *yaml.Node) *yaml.Node {
	out := *m
	out.Content = nil
	for i := 0; i+1 < len(m.Content); i += 2 {
		if !strings.HasPrefix(m.Content[i].Value, "x-") {
			out.Content = append(out.Content, m.Content[i], m.Content[i+1])
		}
	}
	return &out
}

// errEmpty refuses a file with no document: applying it would delete everything,
// which a user should ask for explicitly (with `groups: []` and so on).
var errEmpty = errors.New("the file is empty (an empty bundle would delete everything; write `groups: []` to mean it)")

// parseNode parses exactly one YAML document.
func parseNode(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	doc := new(yaml.Node)
	if err := dec.Decode(doc); err != nil {
		if err == io.EOF {
			return nil, errEmpty
		}
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, errEmpty
	}
	// The parser accepts an anchor that contains itself (&a [*a]), which would send
	// any walk of the tree round forever, and aliases that expand exponentially. The
	// decoder refuses both, so let it look at the whole document first. Its type
	// errors (duplicate keys) are left to the checker, which names the field.
	var te *yaml.TypeError
	if err := doc.Decode(new(any)); err != nil && !errors.As(err, &te) {
		return nil, err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("yaml: line %d: a second document: the file holds one bundle", extra.Line)
	}
	return doc, nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// parserProblems are the messages of yaml.v3's parser stage (parserc.go), which
// reports 0-based lines, unlike its scanner stage: syntaxError adds one to them.
var parserProblems = []string{"did not find expected", "found duplicate %", "found incompatible YAML document", "found undefined tag handle"}

// syntaxError turns the YAML library's "yaml: line N: msg" into FILE:N: msg.
func syntaxError(filename string, err error) Error {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	for _, p := range parserProblems {
		if line > 0 && strings.HasPrefix(msg, p) {
			line++
			break
		}
	}
	if strings.HasPrefix(msg, "did not find expected ',' or") {
		// The usual cause besides a missing bracket: a path parameter in a flow
		// mapping, where [ starts a list.
		msg += ` (a { or [ left open? inside {...}, quote values with brackets: "/items/[id]")`
	}
	return Error{File: filename, Line: line, Message: msg}
}

// ---- locating paths ----

// segment is one step of a field path: a mapping key or a list index.
type segment struct {
	key   string
	index int // -1 for a key
}

// splitPath parses groups[0].apis[1].backend.headers["X.Y"] into segments.
func splitPath(p string) []segment {
	var segs []segment
	for i := 0; i < len(p); {
		switch p[i] {
		case '.':
			i++
		case '[':
			if i+1 < len(p) && p[i+1] == '"' {
				// A quoted key: find the closing quote that is not escaped.
				j := i + 2
				for j < len(p) && (p[j] != '"' || p[j-1] == '\\') {
					j++
				}
				k, err := strconv.Unquote(p[i+1 : min(j+1, len(p))])
				if err != nil {
					return segs
				}
				segs = append(segs, segment{key: k, index: -1})
				i = j + 2 // past `"]`
				continue
			}
			j := strings.IndexByte(p[i:], ']')
			if j < 0 {
				return segs
			}
			n, err := strconv.Atoi(p[i+1 : i+j])
			if err != nil {
				return segs
			}
			segs = append(segs, segment{index: n})
			i += j + 1
		default:
			j := strings.IndexAny(p[i:], ".[")
			if j < 0 {
				j = len(p) - i
			}
			segs = append(segs, segment{key: p[i : i+j], index: -1})
			i += j
		}
	}
	return segs
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// lookup finds key in a mapping, following merge keys (<<), and returns the key and
// value nodes.
func lookup(m *yaml.Node, key string) (k, v *yaml.Node) {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i].Tag != "!!merge" {
			return m.Content[i], m.Content[i+1]
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Tag != "!!merge" {
			continue
		}
		src := deref(m.Content[i+1])
		srcs := []*yaml.Node{src}
		if src.Kind == yaml.SequenceNode {
			srcs = src.Content
		}
		for _, s := range srcs {
			if k, v := lookup(s, key); k != nil {
				return k, v
			}
		}
	}
	return nil, nil
}

// locate walks doc by path and returns the line of the deepest node it reaches: the
// key's line for a field, the item's line for a list element.
func locate(doc *yaml.Node, path string) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, s := range splitPath(path) {
		n = deref(n)
		if s.index >= 0 {
			if n.Kind != yaml.SequenceNode || s.index >= len(n.Content) {
				break
			}
			n = n.Content[s.index]
			line = n.Line
			continue
		}
		k, v := lookup(n, s.key)
		if k == nil {
			break
		}
		n, line = v, k.Line
	}
	return line
}
