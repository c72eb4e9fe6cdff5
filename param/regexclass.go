package param

import (
	"regexp/syntax"
	"unicode/utf8"
)

// byteClassRegex matches, without the regexp engine, the shape most parameter regexes
// take: one ASCII character class repeated, anchored at both ends (^[a-z0-9]+$,
// ^[A-Z]{2,8}$, ^\d*$). regexp.Match costs about 200 ns for a short value even on its
// one-pass path; a table lookup per byte costs a few. Any other regex keeps the
// engine, as does a class with a byte outside ASCII, where the engine's reading of
// UTF-8 would decide.
type byteClassRegex struct {
	in       [256]bool
	min, max int // counts of bytes; max -1: unbounded
}

// compileByteClass returns the fast matcher for expr, or nil when expr is not of that
// shape. expr must already compile with regexp.Compile (same syntax flags).
func compileByteClass(expr string) *byteClassRegex {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil || re.Op != syntax.OpConcat || len(re.Sub) != 3 ||
		re.Sub[0].Op != syntax.OpBeginText || re.Sub[2].Op != syntax.OpEndText {
		return nil
	}
	rep := re.Sub[1]
	m := &byteClassRegex{}
	switch rep.Op {
	case syntax.OpStar:
		m.min, m.max = 0, -1
	case syntax.OpPlus:
		m.min, m.max = 1, -1
	case syntax.OpQuest:
		m.min, m.max = 0, 1
	case syntax.OpRepeat:
		m.min, m.max = rep.Min, rep.Max
	default:
		return nil
	}
	if len(rep.Sub) != 1 {
		return nil
	}
	class := rep.Sub[0]
	switch class.Op {
	case syntax.OpCharClass:
		for i := 0; i+1 < len(class.Rune); i += 2 {
			lo, hi := class.Rune[i], class.Rune[i+1]
			if hi >= utf8.RuneSelf {
				return nil
			}
			for c := lo; c <= hi; c++ {
				m.in[c] = true
			}
		}
	case syntax.OpLiteral:
		if len(class.Rune) != 1 || class.Rune[0] >= utf8.RuneSelf || class.Flags&syntax.FoldCase != 0 {
			return nil
		}
		m.in[class.Rune[0]] = true
	default:
		return nil
	}
	return m
}

// match reports whether v matches, as regexp's Match would.
func (m *byteClassRegex) match(v []byte) bool {
	if len(v) < m.min || (m.max >= 0 && len(v) > m.max) {
		return false
	}
	for _, c := range v {
		if !m.in[c] {
			return false
		}
	}
	return true
}
