package param

import (
	"bytes"
	"regexp"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/corazawaf/libinjection-go"
)

// valueType is a scalar type a value is checked against.
type valueType uint8

const (
	tString valueType = iota
	tInt
	tLong
	tFloat
	tDouble
	tBool
)

var typeNames = map[string]valueType{
	"": tString, "string": tString, "int": tInt, "long": tLong,
	"float": tFloat, "double": tDouble, "boolean": tBool,
}

func (t valueType) numeric() bool { return t >= tInt && t <= tDouble }

// checker holds one parameter's compiled rules and the errors that name them.
type checker struct {
	typ       valueType // for an array, the items' type
	array     bool
	guard     bool
	hasMin    bool
	hasMax    bool
	min, max  float64
	minLen    int // -1: none
	maxLen    int // -1: none
	enum      []string
	enumSet   map[string]struct{} // for long enums; nil when enum is short
	re        *regexp.Regexp
	reClass   *byteClassRegex // re's fast path, when it has that shape
	errType   *Error
	errMin    *Error
	errMax    *Error
	errMinLen *Error
	errMaxLen *Error
	errEnum   *Error
	errRegex  *Error
	errSQLi   *Error
	errXSS    *Error
}

// enumMapFrom is the enum size from which a map beats a linear scan of short strings.
const enumMapFrom = 8

// check verifies one value (one item of an array) against every rule.
func (c *checker) check(v []byte) *Error {
	switch c.typ {
	case tInt, tLong:
		bits := 64
		if c.typ == tInt {
			bits = 32
		}
		n, ok := parseInt(v, bits)
		if !ok {
			return c.errType
		}
		if c.hasMin && float64(n) < c.min {
			return c.errMin
		}
		if c.hasMax && float64(n) > c.max {
			return c.errMax
		}
	case tFloat, tDouble:
		bits := 64
		if c.typ == tFloat {
			bits = 32
		}
		f, ok := parseFloat(v, bits)
		if !ok {
			return c.errType
		}
		if c.hasMin && f < c.min {
			return c.errMin
		}
		if c.hasMax && f > c.max {
			return c.errMax
		}
	case tBool:
		if !bytesEqualFold(v, "true") && !bytesEqualFold(v, "false") {
			return c.errType
		}
	}
	if c.minLen >= 0 || c.maxLen >= 0 {
		n := utf8.RuneCount(v)
		if c.minLen >= 0 && n < c.minLen {
			return c.errMinLen
		}
		if c.maxLen >= 0 && n > c.maxLen {
			return c.errMaxLen
		}
	}
	if c.enum != nil && !c.inEnum(v) {
		return c.errEnum
	}
	if c.reClass != nil {
		if !c.reClass.match(v) {
			return c.errRegex
		}
	} else if c.re != nil && !c.re.Match(v) {
		return c.errRegex
	}
	if c.guard {
		return c.injection(v)
	}
	return nil
}

// checkValue verifies one received value: a scalar whole, an array item by item.
func (c *checker) checkValue(v []byte) *Error {
	if !c.array {
		return c.check(v)
	}
	if len(v) == 0 {
		return nil
	}
	for {
		i := bytes.IndexByte(v, ',')
		if i < 0 {
			return c.check(v)
		}
		if err := c.check(v[:i]); err != nil {
			return err
		}
		v = v[i+1:]
	}
}

func (c *checker) inEnum(v []byte) bool {
	if c.enumSet != nil {
		_, ok := c.enumSet[string(v)] // no allocation: the conversion is a map key
		return ok
	}
	for _, e := range c.enum {
		if string(v) == e {
			return true
		}
	}
	return false
}

// injection runs libinjection's SQLi and XSS detectors over v.
func (c *checker) injection(v []byte) *Error {
	if len(v) == 0 {
		return nil
	}
	s := unsafeString(v)
	if sqli, _ := libinjection.IsSQLi(s); sqli {
		return c.errSQLi
	}
	if mayBeXSS(v) && libinjection.IsXSS(s) {
		return c.errXSS
	}
	return nil
}

// xssSyntax marks the bytes without which libinjection's XSS check cannot flag a
// value: it flags tags, comments and attributes, and a value with none of these bytes
// stays one run of text, or one attribute value, in every context it tries. The
// check allocates ~56 times per value, so values like "paris" or "42" skip
// it (FuzzXSSPrefilter holds this against libinjection itself).
var xssSyntax = func() (t [256]bool) {
	for _, c := range "<>'\"`/=&\x00 \t\n\v\f\r" {
		t[c] = true
	}
	return t
}()

// mayBeXSS reports whether v holds a byte that libinjection's XSS check needs.
func mayBeXSS(v []byte) bool {
	for _, c := range v {
		if xssSyntax[c] {
			return true
		}
	}
	return false
}

// unsafeString views b as a string without copying. Only for calls that do not keep
// the string: b is request memory that fasthttp reuses.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// parseInt parses a decimal integer with an optional sign that fits in bits. It
// exists because strconv allocates its error and wants a string.
func parseInt(b []byte, bits int) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	neg := false
	switch b[0] {
	case '-':
		neg = true
		b = b[1:]
	case '+':
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	limit := uint64(1)<<(bits-1) - 1
	if neg {
		limit++
	}
	var n uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		d := uint64(ch - '0')
		if n > (limit-d)/10 { // checked before multiplying: n*10 could wrap
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		return -int64(n), true // n == 1<<63 wraps to MinInt64, which is right
	}
	return int64(n), true
}

// parseFloat parses a plain decimal number: digits, an optional fraction and
// exponent. The syntax is checked first so strconv never sees hex, NaN, Inf or
// underscores, which Java-style clients would not send and backends may not parse.
func parseFloat(b []byte, bits int) (float64, bool) {
	if !decimalSyntax(b) {
		return 0, false
	}
	f, err := strconv.ParseFloat(unsafeString(b), bits)
	return f, err == nil
}

func decimalSyntax(b []byte) bool {
	i := 0
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		i++
	}
	digits := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
		digits++
	}
	if i < len(b) && b[i] == '.' {
		i++
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		exp := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			exp++
		}
		if exp == 0 {
			return false
		}
	}
	return i == len(b)
}

// bytesEqualFold compares b to an ASCII string ignoring case.
func bytesEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte { return lowerByte[c] }

// lowerByte maps ASCII capitals to small letters and every other byte to itself.
var lowerByte = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = byte(c + 'a' - 'A')
	}
	return t
}()
