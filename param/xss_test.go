package param

import (
	"testing"

	libinjection "github.com/corazawaf/libinjection-go"
)

// FuzzXSSPrefilter: a value the prefilter lets skip libinjection's XSS check is one
// the check would not have flagged.
func FuzzXSSPrefilter(f *testing.F) {
	for _, s := range []string{
		"paris", "42", "a-b_c.d~e", "javascript:alert(1)", "onerror", "x onerror=alert(1)",
		"<script>", "\"><img src=x onerror=alert(1)>", "'-alert(1)-'", "expression(alert(1))",
		"vbscript:msgbox", "data:text/html;base64,PHNjcmlwdD4=", "%3Cscript%3E", "&#60;script",
		"style", "srcdoc", "xmlns:xlink", "`", "x\x00y", "url(javascript:alert(1))",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !mayBeXSS([]byte(s)) && libinjection.IsXSS(s) {
			t.Fatalf("%q: the prefilter skips it, libinjection flags it", s)
		}
	})
}

// TestXSSPrefilterKeepsAttacks: the attacks the guard is for still reach libinjection
// and are refused.
func TestXSSPrefilterKeepsAttacks(t *testing.T) {
	for _, s := range []string{"<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>", "x onerror=alert(1)"} {
		if !mayBeXSS([]byte(s)) {
			t.Errorf("%q skips the XSS check", s)
		}
		if !libinjection.IsXSS(s) {
			t.Errorf("%q is not flagged by libinjection: a seed that tests nothing", s)
		}
	}
	for _, s := range []string{"paris42", "5", "en", "2026-11-28"} {
		if mayBeXSS([]byte(s)) {
			t.Errorf("%q is sent to the XSS check, which it cannot fail", s)
		}
	}
}
