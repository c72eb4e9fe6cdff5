package param

import (
	"regexp"
	"testing"
)

// byteClassPatterns are regexes of the fast path's shape and near misses it must
// leave to the engine.
var byteClassPatterns = []struct {
	expr string
	fast bool
}{
	{`^[a-z0-9]+$`, true},
	{`^[a-z]*$`, true},
	{`^\d{2,4}$`, true},
	{`^[A-Z]{3}$`, true},
	{`^x?$`, true},
	{`^[-_.a-zA-Z0-9]{1,}$`, true},
	{`^(?i)[a-f]+$`, true},
	{`^[^a-z]+$`, false}, // a negated class holds every non-ASCII rune
	{`^[a-zé]+$`, false},
	{`[a-z]+`, false}, // unanchored: a search
	{`^[a-z]+`, false},
	{`^(?m)[a-z]+$`, false},
	{`^[a-z]+$|^x$`, false},
	{`^ab+$`, false},
	{`^(?i)k+$`, false}, // folds to the Kelvin sign
	{`^.+$`, false},
}

func TestByteClassRegexShapes(t *testing.T) {
	for _, p := range byteClassPatterns {
		if got := compileByteClass(p.expr) != nil; got != p.fast {
			t.Errorf("%s: fast path %v, want %v", p.expr, got, p.fast)
		}
	}
}

// FuzzByteClassRegex checks the fast path answers as regexp does, on any bytes.
func FuzzByteClassRegex(f *testing.F) {
	for _, s := range []string{"", "abc", "ABC", "a1", "12", "1234", "12345", "x", "xx", "\xff", "é", "a\nb", "-_."} {
		f.Add(s)
	}
	type pair struct {
		re   *regexp.Regexp
		fast *byteClassRegex
	}
	var pairs []pair
	for _, p := range byteClassPatterns {
		if m := compileByteClass(p.expr); m != nil {
			pairs = append(pairs, pair{regexp.MustCompile(p.expr), m})
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range pairs {
			if got, want := p.fast.match([]byte(s)), p.re.MatchString(s); got != want {
				t.Fatalf("%s on %q: fast %v, regexp %v", p.re, s, got, want)
			}
		}
	})
}
