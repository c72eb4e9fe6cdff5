package signature

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// independentBackendSignature computes the backend signature of a received request
// straight from DESIGN.md, with net/http, net/url and crypto/hmac only, sharing no code
// with the package: METHOD "\n" Content-MD5 "\n" Headers PathAndParameters.
// extra are the header parameters the gateway was told to sign.
func independentBackendSignature(r *http.Request, body []byte, secret string, extra []string) (sts, sig, list string) {
	ct := strings.ToLower(r.Header.Get("Content-Type"))
	form := strings.HasPrefix(ct, "application/x-www-form-urlencoded")
	md5b64 := ""
	if (r.Method == "POST" || r.Method == "PUT") && !form && len(body) > 0 {
		d := md5.Sum(body)
		md5b64 = base64.StdEncoding.EncodeToString(d[:])
	}
	names := map[string]bool{}
	for k := range r.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-ca-") && !strings.HasPrefix(lk, "x-ca-proxy-signature") {
			names[lk] = true
		}
	}
	for _, e := range extra {
		names[strings.ToLower(e)] = true
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var b strings.Builder
	b.WriteString(r.Method + "\n" + md5b64 + "\n")
	for _, n := range sorted {
		b.WriteString(n + ":" + r.Header.Get(n) + "\n")
	}
	b.WriteString(r.URL.Path)
	params, _ := url.ParseQuery(r.URL.RawQuery)
	if form {
		fp, _ := url.ParseQuery(string(body))
		for k, vs := range fp {
			params[k] = append(params[k], vs...)
		}
	}
	var keys []string
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString(k)
		if v := strings.Join(params[k], ","); v != "" || len(params[k]) > 1 {
			b.WriteString("=" + v)
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(b.String()))
	return b.String(), base64.StdEncoding.EncodeToString(m.Sum(nil)), strings.Join(sorted, ",")
}

// TestBackendSignature sends gateway-signed requests over a real connection with
// fasthttp's client to a net/http backend, which checks them with the independent
// implementation above and with VerifyBackendRequest.
func TestBackendSignature(t *testing.T) {
	secrets := map[string]string{"DemoKey1": "DemoSecret1", "DemoKey2": "DemoSecret2"}
	extra := []string{"X-Days", "x-client-ip"}
	type result struct {
		indep, ours error
		sts         string
		body        string
	}
	results := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var res result
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		sts, sig, list := independentBackendSignature(r, body, secrets[r.Header.Get(HeaderProxySignatureSecretKey)], extra)
		res.sts = sts
		if got := r.Header.Get(HeaderProxySignature); got != sig {
			res.indep = &Error{"independent signature " + sig + " != sent " + got + "; sts " + sts}
		} else if got := r.Header.Get(HeaderProxySignatureHeaders); got != list {
			res.indep = &Error{"signed headers " + got + ", want " + list}
		}
		res.ours = VerifyBackendRequest(r, func(k string) (string, bool) { s, ok := secrets[k]; return s, ok })
		b, _ := io.ReadAll(r.Body)
		res.body = string(b)
		results <- res
		if res.ours != nil {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	clients := map[bool]*fasthttp.HostClient{ // fasthttp's client sets the URI's normalizing to its own
		false: {Addr: addr},
		true:  {Addr: addr, DisablePathNormalizing: true},
	}

	cases := []struct {
		name, method, uri, ct, body string
		key                         string
	}{
		{name: "get", method: "GET", uri: "/v2/weather/paris?days=3&unit=c", key: "DemoKey1"},
		{name: "json post", method: "POST", uri: "/orders", ct: "application/json", body: `{"qty":1}`, key: "DemoKey1"},
		{name: "put", method: "PUT", uri: "/orders/7?dry=true", ct: "text/plain", body: "x", key: "DemoKey2"},
		{name: "form", method: "POST", uri: "/login?src=app", ct: "application/x-www-form-urlencoded", body: "user=ann+lee&pin=1234&e=", key: "DemoKey2"},
		{name: "delete with body not md5'd", method: "DELETE", uri: "/orders/7", ct: "application/json", body: "{}", key: "DemoKey1"},
		{name: "escaped utf-8 path, repeated keys", method: "GET", uri: "/v2/S%C3%A3o%20Paulo?a=1&a=2&b=%E5%8C%97", key: "DemoKey1"},
		{name: "escaped slash and dots", method: "GET", uri: "/v2/a%2Fb/x/..%2Fc?q=%2F", key: "DemoKey2"},
	}
	// The gateway sends paths verbatim (DisablePathNormalizing), Sign reads the path as
	// set then; a normalizing client writes it escaped again from the decoded path.
	for _, verbatim := range []bool{false, true} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s verbatim=%v", c.name, verbatim), func(t *testing.T) {
				req := fasthttp.AcquireRequest()
				defer fasthttp.ReleaseRequest(req)
				resp := fasthttp.AcquireResponse()
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI("http://" + addr + c.uri)
				req.URI().DisablePathNormalizing = verbatim
				req.Header.SetMethod(c.method)
				if c.ct != "" {
					req.Header.SetContentType(c.ct)
				}
				req.SetBodyString(c.body)
				req.Header.Set("X-Ca-Request-Id", "req-1")
				req.Header.Set("X-Ca-Key", "203752345")
				req.Header.Set("X-Days", "3")
				req.Header.Set("X-Source", "not signed")
				req.Header.Set(HeaderProxySignature, "forged by the client") // must be replaced

				var sc Scratch
				NewBackendKey(c.key, secrets[c.key]).Sign(req, extra, &sc)
				if err := clients[verbatim].DoTimeout(req, resp, 5*time.Second); err != nil {
					t.Fatal(err)
				}
				res := <-results
				if res.indep != nil {
					t.Errorf("independent check: %v\nours %q", res.indep, sc.StringToSign())
				}
				if res.sts != string(sc.StringToSign()) {
					t.Errorf("string-to-sign\nours  %q\nindep %q", sc.StringToSign(), res.sts)
				}
				if res.ours != nil {
					t.Errorf("VerifyBackendRequest: %v", res.ours)
				}
				if res.body != c.body {
					t.Errorf("handler read body %q after verification, want %q", res.body, c.body)
				}
				if resp.StatusCode() != 200 {
					t.Errorf("status %d", resp.StatusCode())
				}
			})
		}
	}
}

func TestVerifyBackendRequestRefusals(t *testing.T) {
	secretFor := func(k string) (string, bool) { return "s1", k == "k1" }
	signed := func() *http.Request {
		req := new(fasthttp.Request)
		req.SetRequestURI("http://backend/orders?x=1")
		req.Header.SetMethod("POST")
		req.Header.SetContentType("application/json")
		req.SetBodyString(`{"a":1}`)
		req.Header.Set("X-Ca-Stage", "RELEASE")
		var sc Scratch
		NewBackendKey("k1", "s1").Sign(req, nil, &sc)
		r, err := http.ReadRequest(bufioReader(overTheWire(t, req).String()))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := VerifyBackendRequest(signed(), secretFor); err != nil {
		t.Fatalf("valid: %v", err)
	}
	cases := map[string]struct {
		tamper func(r *http.Request)
		want   error
	}{
		"no signature":    {func(r *http.Request) { r.Header.Del(HeaderProxySignature) }, ErrMissingProxySignature},
		"no key":          {func(r *http.Request) { r.Header.Del(HeaderProxySignatureSecretKey) }, ErrMissingProxySignature},
		"unknown key":     {func(r *http.Request) { r.Header.Set(HeaderProxySignatureSecretKey, "k9") }, ErrUnknownBackendKey},
		"body changed":    {func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader(`{"a":2}`)) }, ErrInvalidProxySignature},
		"query changed":   {func(r *http.Request) { r.URL.RawQuery = "x=2" }, ErrInvalidProxySignature},
		"header changed":  {func(r *http.Request) { r.Header.Set("X-Ca-Stage", "TEST") }, ErrInvalidProxySignature},
		"header unlisted": {func(r *http.Request) { r.Header.Set(HeaderProxySignatureHeaders, "") }, ErrInvalidProxySignature},
		"method changed":  {func(r *http.Request) { r.Method = "PUT" }, ErrInvalidProxySignature},
	}
	for name, c := range cases {
		r := signed()
		c.tamper(r)
		if err := VerifyBackendRequest(r, secretFor); err != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// TestBackendSignReusedScratch: a Scratch that signed one request signs the next
// exactly as a fresh one would, whether the next sends the same header names in the
// same places (the sort is reused; the values are the new request's) or not.
func TestBackendSignReusedScratch(t *testing.T) {
	key := NewBackendKey("DemoKey1", "DemoSecret1")
	extra := []string{"X-Days"}
	rng := rand.New(rand.NewPCG(7, 9))
	names := []string{"X-Ca-Key", "X-Ca-Nonce", "X-Ca-Timestamp", "x-ca-stage", "X-Days", "Accept", "X-Ca-Signature"}
	var reused Scratch
	var last string
	same := 0
	for i := range 300 {
		req := new(fasthttp.Request)
		req.SetRequestURI("http://127.0.0.1/v2/items?n=" + strconv.Itoa(i))
		order := names
		if rng.IntN(3) == 0 { // a third of the calls send their headers in another order
			order = slices.Clone(names)
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		}
		sent := order[:4+rng.IntN(len(order)-3)]
		for _, n := range sent {
			req.Header.Add(n, "v"+strconv.Itoa(rng.IntN(1000)))
		}
		twice := rng.IntN(10) == 0
		if twice {
			req.Header.Add("X-Ca-Key", "sent twice") // a repeat: the first value signs
		}
		if shape := fmt.Sprint(sent, twice); shape == last {
			same++ // the reused scratch's sort applies
		} else {
			last = shape
		}
		fresh := new(fasthttp.Request)
		req.CopyTo(fresh)
		var sc Scratch
		key.Sign(fresh, extra, &sc)
		key.Sign(req, extra, &reused)
		if got, want := string(reused.StringToSign()), string(sc.StringToSign()); got != want {
			t.Fatalf("call %d: string-to-sign with a reused scratch\n%q\nfresh\n%q", i, got, want)
		}
		for _, h := range []string{HeaderProxySignature, HeaderProxySignatureHeaders} {
			if got, want := string(req.Header.Peek(h)), string(fresh.Header.Peek(h)); got != want {
				t.Fatalf("call %d: %s %q with a reused scratch, %q fresh", i, h, got, want)
			}
		}
	}
	if same < 30 || same > 270 {
		t.Fatalf("%d of 300 calls had the previous call's header names: both paths need exercising", same)
	}

	// The same X-Ca-* names in the same order, but another header between them: their
	// places differ, and so must the values signed.
	for _, hdrs := range [][]string{{"X-Ca-Key", "X-Ca-Nonce"}, {"X-Ca-Key", "Accept", "X-Ca-Nonce"}} {
		req, fresh := new(fasthttp.Request), new(fasthttp.Request)
		req.SetRequestURI("http://127.0.0.1/v2/items")
		for i, n := range hdrs {
			req.Header.Add(n, "w"+strconv.Itoa(i))
		}
		req.CopyTo(fresh)
		var sc Scratch
		key.Sign(fresh, extra, &sc)
		key.Sign(req, extra, &reused)
		if got, want := string(reused.StringToSign()), string(sc.StringToSign()); got != want {
			t.Fatalf("headers %v: string-to-sign with a reused scratch\n%q\nfresh\n%q", hdrs, got, want)
		}
	}
}
