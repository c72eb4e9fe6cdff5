package signature

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

const fixedLines = "GET\n\n\n\n\n"

// TestCanonicalization pins the string-to-sign for the edge cases the published
// algorithm leaves open or that clients commonly get wrong.
func TestCanonicalization(t *testing.T) {
	cases := []struct {
		name    string
		method  string
		uri     string
		headers []string
		body    string
		want    string
	}{
		{name: "no parameters", uri: "/p", want: fixedLines + "/p"},
		{name: "lone question mark", uri: "/p?", want: fixedLines + "/p"},
		{name: "sorted by key", uri: "/p?b=2&c=3&a=1", want: fixedLines + "/p?a=1&b=2&c=3"},
		{name: "repeated key joins values in order", uri: "/p?a=2&b=1&a=1", want: fixedLines + "/p?a=2,1&b=1"},
		{name: "repeated empty values", uri: "/p?a=&a=", want: fixedLines + "/p?a=,"},
		{name: "empty values key alone", uri: "/p?b=&a&c=1", want: fixedLines + "/p?a&b&c=1"},
		{name: "percent-encoded values decoded", uri: "/p?q=%26%3D%2B%25", want: fixedLines + "/p?q=&=+%"},
		{name: "percent-encoded key decoded", uri: "/p?%61b=1", want: fixedLines + "/p?ab=1"},
		{name: "plus in query is a space", uri: "/p?q=a+b", want: fixedLines + "/p?q=a b"},
		{name: "utf-8 value", uri: "/p?city=S%C3%A3o%20Paulo", want: fixedLines + "/p?city=São Paulo"},
		{name: "utf-8 keys sort by bytes", uri: "/p?%C3%A9=1&z=2", want: fixedLines + "/p?z=2&é=1"},
		{name: "malformed escapes kept", uri: "/p?q=%zz%4", want: fixedLines + "/p?q=%zz%4"},
		{name: "path kept as sent", uri: "/a%20b/%E5%8C%97", want: fixedLines + "/a%20b/%E5%8C%97"},
		{name: "dot segments kept", uri: "/a/../b//c", want: fixedLines + "/a/../b//c"},
		{
			name: "form body with plus", method: "POST", uri: "/f",
			headers: []string{"Content-Type: application/x-www-form-urlencoded"},
			body:    "msg=hello+world&x=%2B&e=",
			want:    "POST\n\n\napplication/x-www-form-urlencoded\n\n/f?e&msg=hello world&x=+",
		},
		{
			name: "form and query share a key", method: "POST", uri: "/f?a=1",
			headers: []string{"Content-Type: application/x-www-form-urlencoded; charset=UTF-8"},
			body:    "a=2&b=3",
			want:    "POST\n\n\napplication/x-www-form-urlencoded; charset=UTF-8\n\n/f?a=1,2&b=3",
		},
		{
			name: "form content type in other case", method: "PUT", uri: "/f",
			headers: []string{"Content-Type: Application/X-WWW-Form-Urlencoded"},
			body:    "k=v",
			want:    "PUT\n\n\nApplication/X-WWW-Form-Urlencoded\n\n/f?k=v",
		},
		{
			name: "json body is not form", method: "POST", uri: "/f",
			headers: []string{"Content-Type: application/json", "Content-MD5: abc"},
			body:    "a=1",
			want:    "POST\n\nabc\napplication/json\n\n/f",
		},
		{
			name: "standard headers", uri: "/p",
			headers: []string{"Accept: */*", "Date: Mon, 02 Jan 2006 15:04:05 GMT"},
			want:    "GET\n*/*\n\n\nMon, 02 Jan 2006 15:04:05 GMT\n/p",
		},
		{
			name: "signed header names as written, sorted by bytes, values any case", uri: "/p",
			headers: []string{"x-tenant: acme", "X-CA-KEY: k", "X-Ca-Signature-Headers: x-ca-key,X-Tenant"},
			want:    fixedLines + "X-Tenant:acme\nx-ca-key:k\n/p",
		},
		{
			name: "signed list trimmed, empty names dropped", uri: "/p",
			headers: []string{"x-a: 1", "x-b: 2", "X-Ca-Signature-Headers:  x-b , ,x-a,"},
			want:    fixedLines + "x-a:1\nx-b:2\n/p",
		},
		{
			name: "signature headers never signed", uri: "/p",
			headers: []string{"X-Ca-Signature: zzz", "x-a: 1", "X-Ca-Signature-Headers: X-Ca-Signature,x-a,x-ca-signature-headers"},
			want:    fixedLines + "x-a:1\n/p",
		},
		{
			name: "missing signed header has an empty value", uri: "/p",
			headers: []string{"X-Ca-Signature-Headers: x-missing"},
			want:    fixedLines + "x-missing:\n/p",
		},
		{
			name: "repeated name in list signed twice", uri: "/p",
			headers: []string{"x-a: 1", "X-Ca-Signature-Headers: x-a,x-a"},
			want:    fixedLines + "x-a:1\nx-a:1\n/p",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = "GET"
			}
			req := wire(t, method, c.uri, c.headers, c.body)
			if got := string(AppendStringToSign(nil, req)); got != c.want {
				t.Errorf("\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

// TestManyParameters checks the fallback past the inline arrays: 100 parameters and
// 40 signed headers still sort correctly.
func TestManyParameters(t *testing.T) {
	var q, want, list, lines []string
	var hdrs []string
	for i := 99; i >= 0; i-- {
		q = append(q, "k"+pad3(i)+"="+itoa(i))
	}
	for i := 0; i < 100; i++ {
		want = append(want, "k"+pad3(i)+"="+itoa(i))
	}
	for i := 39; i >= 0; i-- {
		name := "x-h" + pad3(i)
		hdrs = append(hdrs, name+": "+itoa(i))
		list = append(list, name)
	}
	for i := 0; i < 40; i++ {
		lines = append(lines, "x-h"+pad3(i)+":"+itoa(i)+"\n")
	}
	hdrs = append(hdrs, "X-Ca-Signature-Headers: "+strings.Join(list, ","))
	req := wire(t, "GET", "/m?"+strings.Join(q, "&"), hdrs, "")
	w := fixedLines + strings.Join(lines, "") + "/m?" + strings.Join(want, "&")
	if got := string(AppendStringToSign(nil, req)); got != w {
		t.Errorf("\n got %q\nwant %q", got, w)
	}
}

func pad3(i int) string {
	s := itoa(i)
	return strings.Repeat("0", 3-len(s)) + s
}

func TestInvalidSignatureMessage(t *testing.T) {
	got := string(AppendInvalidSignatureMessage([]byte("x"), []byte("GET\n\n/p?a=b\r\x00c")))
	want := "xInvalid Signature, Server StringToSign:`GET##/p?a=b??c`"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	long := AppendInvalidSignatureMessage(nil, []byte(strings.Repeat("a", 5000)))
	if len(long) != len("Invalid Signature, Server StringToSign:`")+4096+len("...`") {
		t.Errorf("long message is %d bytes", len(long))
	}
}

func TestParseMethod(t *testing.T) {
	for in, want := range map[string]Method{"": HmacSHA256, "HmacSHA256": HmacSHA256, "hmacsha1": HmacSHA1, "HmacSHA1": HmacSHA1} {
		if m, ok := ParseMethod([]byte(in)); !ok || m != want {
			t.Errorf("ParseMethod(%q) = %v, %v", in, m, ok)
		}
	}
	if _, ok := ParseMethod([]byte("HmacMD5")); ok {
		t.Error("HmacMD5 accepted")
	}
}

// TestSortingSpaceReused: one index canonicalizes a request with more parameters and
// signed headers than its initial space, then small ones; each string-to-sign equals
// the one a fresh index gives, so nothing of an earlier request leaks into a later one.
func TestSortingSpaceReused(t *testing.T) {
	var q, hdrs, list []string
	for i := 49; i >= 0; i-- {
		q = append(q, "k"+pad3(i)+"="+itoa(i))
	}
	for i := 29; i >= 0; i-- {
		hdrs = append(hdrs, "x-h"+pad3(i)+": "+itoa(i))
		list = append(list, "x-h"+pad3(i))
	}
	hdrs = append(hdrs, "X-Ca-Signature-Headers: "+strings.Join(list, ","))
	reqs := []*fasthttp.Request{
		wire(t, "GET", "/big?"+strings.Join(q, "&"), hdrs, ""),
		wire(t, "GET", "/small?b=2&a=1", []string{"x-a: 1", "X-Ca-Signature-Headers: x-a"}, ""),
		wire(t, "GET", "/none", nil, ""),
		wire(t, "GET", "/big?"+strings.Join(q, "&"), hdrs, ""),
	}
	var reused headerIndex
	for i, req := range reqs {
		var fresh headerIndex
		fresh.build(&req.Header)
		want := string(appendStringToSign(nil, req, &fresh, req.URI().PathOriginal(), false))
		reused.build(&req.Header)
		if got := string(appendStringToSign(nil, req, &reused, req.URI().PathOriginal(), false)); got != want {
			t.Fatalf("request %d with a reused index:\n got %q\nwant %q", i, got, want)
		}
	}
	if cap(reused.params) < 50 || cap(reused.names) < 30 {
		t.Errorf("the space did not stay grown: %d params, %d names", cap(reused.params), cap(reused.names))
	}
}
