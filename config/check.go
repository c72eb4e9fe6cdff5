package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tollgate/tollgate/fsm"
)

// checker walks the YAML node tree beside the Go type it will decode into and records
// every unknown field, duplicate key and wrongly typed value with its line and path.
// yaml.v3's own KnownFields decoding stops at the first error and reports neither the
// path nor, for custom types like fsm.Duration, the line; walking first gives all of
// them.
type checker struct {
	file    string
	errs    ErrorList
	dropped int
}

var (
	bundleType      = reflect.TypeFor[fsm.Bundle]()
	timeType        = reflect.TypeFor[time.Time]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

func (c *checker) add(n *yaml.Node, path, format string, args ...any) {
	if len(c.errs) > 10*MaxErrors {
		// Only MaxErrors are shown (the first by line, so keep some spare); this
		// bounds memory for files that alias one bad node many times.
		c.dropped++
		return
	}
	c.errs = append(c.errs, Error{File: c.file, Line: n.Line, Path: path, Message: fmt.Sprintf(format, args...)})
}

func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// mapKey appends a map key the way fsm.Validate does.
func mapKey(path, k string) string {
	if k != "" && !strings.ContainsAny(k, `.[]"`) {
		return field(path, k)
	}
	return path + "[" + strconv.Quote(k) + "]"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func (c *checker) walk(n *yaml.Node, t reflect.Type, path string) {
	n = deref(n)
	if n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // null leaves the zero value, as the decoder does
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// Custom types (fsm.Duration, fsm.JSONDoc) decide for themselves; their
		// errors carry no line, so add it here.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			c.add(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return
	}
	if t == timeType {
		if n.Kind != yaml.ScalarNode || n.Decode(new(time.Time)) != nil {
			c.add(n, path, "want a timestamp like 2027-01-01T00:00:00Z, got %s", kindName(n))
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		c.walk(n, t.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, "want a mapping, got %s", kindName(n))
			return
		}
		c.mapping(n, fieldsOf(t), path, map[string]int{})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.add(n, path, "want a list, got %s", kindName(n))
			return
		}
		for i, item := range n.Content {
			c.walk(item, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(n, path, "want a mapping, got %s", kindName(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if first, dup := seen[k.Value]; dup {
				c.add(k, mapKey(path, k.Value), "duplicate key (first at line %d)", first)
				continue
			}
			seen[k.Value] = k.Line
			c.walk(v, t.Elem(), mapKey(path, k.Value))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			c.add(n, path, "want a string, got %s", kindName(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			c.add(n, path, "want an integer, got %s", kindName(n))
		}
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			c.add(n, path, "want a number, got %s", kindName(n))
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Decode(reflect.New(t).Interface()) != nil {
			c.add(n, path, "want true or false, got %s", kindName(n))
		}
	}
}

// mapping checks the keys of a mapping decoded into a struct, then those it merges
// (<<) that it does not override. seen records each key's line to report duplicates.
func (c *checker) mapping(n *yaml.Node, fields map[string]reflect.Type, path string, seen map[string]int) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		p := field(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			c.add(k, p, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		ft, ok := fields[k.Value]
		if !ok {
			c.add(k, p, "unknown field%s", suggest(k.Value, fields))
			continue
		}
		c.walk(v, ft, p)
	}
	for _, m := range merges {
		m = deref(m)
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, s := range srcs {
			s = deref(s)
			if s.Kind != yaml.MappingNode {
				c.add(s, path, "a merge (<<) needs a mapping, got %s", kindName(s))
				continue
			}
			// Keys given directly win over merged ones, as in the decoder; each source
			// is checked on its own, since sources may repeat each other's keys.
			own := &yaml.Node{Kind: yaml.MappingNode}
			for i := 0; i+1 < len(s.Content); i += 2 {
				if _, direct := seen[s.Content[i].Value]; !direct {
					own.Content = append(own.Content, s.Content[i], s.Content[i+1])
				}
			}
			c.mapping(own, fields, path, map[string]int{})
		}
	}
}

// fieldsOf maps a struct's YAML names to field types, flattening inline structs.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if slices.Contains(strings.Split(opts, ","), "inline") {
			for k, v := range fieldsOf(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

// suggest names the field the user probably meant, if one is close.
func suggest(got string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for name := range fields {
		d := distance(strings.ToLower(got), strings.ToLower(name))
		if d < bestD || d == bestD && name < best {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
