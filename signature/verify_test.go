package signature

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/ratelimit"
	"github.com/valyala/fasthttp"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func fixedSigner(secret string) *Signer {
	s := NewSigner("app-key", secret)
	s.Now = func() time.Time { return t0 }
	s.Stage = "RELEASE"
	return s
}

// signedRequest signs a client request built by build and returns it as a server
// receives it, with the string-to-sign the client signed.
func signedRequest(t *testing.T, s *Signer, build func(*fasthttp.Request)) (*fasthttp.Request, string) {
	t.Helper()
	req := new(fasthttp.Request)
	req.SetRequestURI("http://api.example.com/cities/paris?days=3&unit=c")
	req.Header.Set("Accept", "application/json")
	if build != nil {
		build(req)
	}
	sts := s.Sign(req)
	return overTheWire(t, req), sts
}

func verify(req *fasthttp.Request, now time.Time, secrets ...*Secret) (error, string) {
	var sc Scratch
	err := (&Verifier{}).Verify(req, secrets, now, &sc)
	return err, string(sc.StringToSign())
}

// TestSignerRoundTrip signs requests of every shape with Signer, sends them through
// fasthttp's wire format, and verifies them; the server must compute the very string
// the client signed.
func TestSignerRoundTrip(t *testing.T) {
	builds := map[string]func(*fasthttp.Request){
		"get":  nil,
		"sha1": nil,
		"json with md5": func(r *fasthttp.Request) {
			r.Header.SetMethod("POST")
			r.Header.SetContentType("application/json")
			r.SetBodyString(`{"qty":2}`)
		},
		"form": func(r *fasthttp.Request) {
			r.Header.SetMethod("POST")
			r.Header.SetContentType("application/x-www-form-urlencoded")
			r.SetBodyString("user=ann+lee&pin=%31&days=4")
		},
		"body without content type": func(r *fasthttp.Request) {
			r.Header.SetMethod("PUT")
			r.SetBodyString("raw")
		},
		"escaped utf-8 path and query": func(r *fasthttp.Request) {
			r.SetRequestURI("http://api.example.com/cities/S%C3%A3o%20Paulo?name=%E5%8C%97%E4%BA%AC&a=1&a=2")
		},
		"extra signed header": func(r *fasthttp.Request) { r.Header.Set("X-Tenant", "acme") },
	}
	for name, build := range builds {
		t.Run(name, func(t *testing.T) {
			s := fixedSigner("secret-1")
			s.ContentMD5 = true
			s.Headers = []string{"X-Tenant"}
			if name == "sha1" {
				s.Method = HmacSHA1
			}
			req, sts := signedRequest(t, s, build)
			err, server := verify(req, t0.Add(time.Minute), NewSecret("secret-1"))
			if err != nil {
				t.Fatalf("Verify: %v\nclient %q\nserver %q", err, sts, server)
			}
			if server != sts {
				t.Errorf("client %q\nserver %q", sts, server)
			}
		})
	}
}

func TestVerifyRefusals(t *testing.T) {
	sec := NewSecret("secret-1")
	now := t0.Add(time.Minute)
	post := func(r *fasthttp.Request) {
		r.Header.SetMethod("POST")
		r.Header.SetContentType("application/json")
		r.SetBodyString(`{"qty":2}`)
	}
	cases := []struct {
		name   string
		build  func(*fasthttp.Request)
		tamper func(*fasthttp.Request)
		now    time.Time
		want   error
	}{
		{name: "valid", now: now},
		{name: "edge of window", now: t0.Add(DefaultWindow)},
		{name: "edge of window, client ahead", now: t0.Add(-DefaultWindow)},
		{name: "expired", now: t0.Add(DefaultWindow + time.Millisecond), want: ErrTimestampExpired},
		{name: "from the future", now: t0.Add(-DefaultWindow - time.Second), want: ErrTimestampExpired},
		{name: "missing timestamp", tamper: func(r *fasthttp.Request) { r.Header.Del(HeaderTimestamp) }, want: ErrInvalidTimestamp},
		{name: "timestamp in seconds style", tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderTimestamp, "1.79e12") }, want: ErrInvalidTimestamp},
		{name: "negative timestamp", tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderTimestamp, "-1") }, want: ErrInvalidTimestamp},
		{name: "overlong timestamp", tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderTimestamp, strings.Repeat("9", 19)) }, want: ErrInvalidTimestamp},
		{name: "unknown method", tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderSignatureMethod, "HmacMD5") }, want: ErrInvalidSignatureMethod},
		{name: "method switched", tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderSignatureMethod, "HmacSHA1") }, want: ErrInvalidSignature},
		{name: "missing signature", tamper: func(r *fasthttp.Request) { r.Header.Del(HeaderSignature) }, want: ErrInvalidSignature},
		{name: "query tampered", tamper: func(r *fasthttp.Request) { r.SetRequestURI("/cities/paris?days=4&unit=c") }, want: ErrInvalidSignature},
		{name: "value appended to a key", tamper: func(r *fasthttp.Request) { r.SetRequestURI("/cities/paris?days=3&unit=c&days=9") }, want: ErrInvalidSignature},
		{name: "signed header tampered", tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderStage, "TEST") }, want: ErrInvalidSignature},
		{name: "unsigned header added", tamper: func(r *fasthttp.Request) { r.Header.Set("X-Other", "1") }},
		{name: "body tampered, md5 kept", build: post, tamper: func(r *fasthttp.Request) { r.SetBodyString(`{"qty":9}`) }, want: ErrInvalidContentMD5},
		{name: "body and md5 tampered", build: post, tamper: func(r *fasthttp.Request) {
			r.SetBodyString(`{"qty":9}`)
			r.Header.Set(HeaderContentMD5, string(appendContentMD5(nil, r.Body())))
		}, want: ErrInvalidSignature},
		{name: "md5 not base64 of md5", build: post, tamper: func(r *fasthttp.Request) { r.Header.Set(HeaderContentMD5, "x") }, want: ErrInvalidContentMD5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := fixedSigner("secret-1")
			s.ContentMD5 = true
			req, _ := signedRequest(t, s, c.build)
			if c.tamper != nil {
				c.tamper(req)
			}
			at := c.now
			if at.IsZero() {
				at = now
			}
			if err, server := verify(req, at, sec); err != c.want {
				t.Errorf("got %v, want %v (server %q)", err, c.want, server)
			}
		})
	}
}

func TestVerifyWindowConfigurable(t *testing.T) {
	req, _ := signedRequest(t, fixedSigner("s"), nil)
	var sc Scratch
	v := Verifier{Window: time.Minute}
	if err := v.Verify(req, []*Secret{NewSecret("s")}, t0.Add(59*time.Second), &sc); err != nil {
		t.Errorf("within 1m window: %v", err)
	}
	if err := v.Verify(req, []*Secret{NewSecret("s")}, t0.Add(61*time.Second), &sc); err != ErrTimestampExpired {
		t.Errorf("past 1m window: %v", err)
	}
}

// TestTwoSecretsLive checks rotation: while an app has an old and a new secret, calls
// signed with either pass; once the old one is retired, its calls fail.
func TestTwoSecretsLive(t *testing.T) {
	oldS, newS := NewSecret("old-secret"), NewSecret("new-secret")
	now := t0.Add(time.Second)
	for _, signWith := range []string{"old-secret", "new-secret"} {
		req, _ := signedRequest(t, fixedSigner(signWith), nil)
		if err, _ := verify(req, now, newS, oldS); err != nil {
			t.Errorf("signed with %s, both live: %v", signWith, err)
		}
		if err, _ := verify(req, now, oldS, nil); (err == nil) != (signWith == "old-secret") {
			t.Errorf("signed with %s, old only: %v", signWith, err)
		}
	}
	req, _ := signedRequest(t, fixedSigner("old-secret"), nil)
	if err, _ := verify(req, now, newS); err != ErrInvalidSignature {
		t.Errorf("old secret retired: %v", err)
	}
	if err, _ := verify(req, now); err != ErrInvalidSignature {
		t.Errorf("no secrets: %v", err)
	}
}

// TestDecodedPathAccepted covers a client that signs the decoded path: the raw form
// fails, the decoded form is tried and passes; the message shows the raw form.
func TestDecodedPathAccepted(t *testing.T) {
	req := wire(t, "GET", "/cities/S%C3%A3o?x=1", []string{
		"X-Ca-Timestamp: " + itoa(int(t0.UnixMilli())),
		"X-Ca-Signature-Headers: x-ca-timestamp",
	}, "")
	sts := "GET\n\n\n\n\nx-ca-timestamp:" + itoa(int(t0.UnixMilli())) + "\n/cities/São?x=1"
	var ms macScratch
	req.Header.SetBytesV(HeaderSignature, ms.signature(NewSecret("s"), HmacSHA256, []byte(sts)))
	err, server := verify(req, t0, NewSecret("s"))
	if err != nil {
		t.Fatalf("decoded path refused: %v", err)
	}
	if !strings.HasSuffix(server, "/cities/S%C3%A3o?x=1") {
		t.Errorf("server string-to-sign %q, want the path as received", server)
	}
	req.Header.Set(HeaderSignature, "bm90IGl0")
	if err, _ := verify(req, t0, NewSecret("s")); err != ErrInvalidSignature {
		t.Errorf("bad signature: %v", err)
	}
}

func TestVerifierNonces(t *testing.T) {
	// The store this package ships, and the cluster's that the node uses.
	cluster, err := ratelimit.NewNonceStore(ratelimit.NonceConfig{MaxEntries: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	for name, store := range map[string]NonceStore{"local": NewLocalNonceStore(0, 1000), "cluster": cluster} {
		t.Run(name, func(t *testing.T) { testVerifierNonces(t, store) })
	}
}

func testVerifierNonces(t *testing.T, store NonceStore) {
	sec := []*Secret{NewSecret("s")}
	v := Verifier{Nonces: store}
	req, _ := signedRequest(t, fixedSigner("s"), nil)
	var sc Scratch
	if err := v.Verify(req, sec, t0, &sc); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := v.Verify(req, sec, t0.Add(time.Minute), &sc); err != ErrNonceUsed {
		t.Errorf("replay: %v, want ErrNonceUsed", err)
	}
	req2, _ := signedRequest(t, fixedSigner("s"), nil)
	if err := v.Verify(req2, sec, t0, &sc); err != nil {
		t.Errorf("fresh nonce: %v", err)
	}
	forged, _ := signedRequest(t, fixedSigner("other"), nil)
	if err := v.Verify(forged, sec, t0, &sc); err != ErrInvalidSignature {
		t.Errorf("forged: %v", err)
	}
	// A forged request carrying a genuine one's nonce must not use it up: the genuine
	// request that comes after still passes.
	genuine, _ := signedRequest(t, fixedSigner("s"), nil)
	forgedCopy := new(fasthttp.Request)
	genuine.CopyTo(forgedCopy)
	forgedCopy.Header.Set(HeaderSignature, "bm90IGl0")
	if err := v.Verify(forgedCopy, sec, t0, &sc); err != ErrInvalidSignature {
		t.Errorf("forged with a genuine nonce: %v", err)
	}
	if err := v.Verify(genuine, sec, t0, &sc); err != nil {
		t.Errorf("genuine after a forgery with its nonce: %v", err)
	}
	req3, _ := signedRequest(t, fixedSigner("s"), nil)
	req3.Header.Del(HeaderNonce) // unsigned now, and missing
	req3.Header.Set(HeaderSignatureHeaders, "x-ca-key")
	var ms macScratch
	req3.Header.SetBytesV(HeaderSignature, ms.signature(NewSecret("s"), HmacSHA256, AppendStringToSign(nil, req3)))
	if err := v.Verify(req3, sec, t0, &sc); err != ErrInvalidNonce {
		t.Errorf("missing nonce: %v, want ErrInvalidNonce", err)
	}
}

// TestSignHTTP signs a net/http request and checks that what net/http actually
// writes verifies, body intact.
func TestSignHTTP(t *testing.T) {
	for _, ct := range []string{"application/x-www-form-urlencoded", "application/json"} {
		body := "b=2&a=x+y"
		r, _ := http.NewRequest("POST", "http://api.example.com/o%20k/orders?z=1&z=0", strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		r.Header.Set("X-Tenant", "acme")
		s := fixedSigner("secret")
		s.ContentMD5 = true
		s.Headers = []string{"x-tenant"}
		sts, err := s.SignHTTP(r)
		if err != nil {
			t.Fatal(err)
		}
		var raw strings.Builder
		if err := r.Write(&raw); err != nil {
			t.Fatal(err)
		}
		req := parseRequest(t, raw.String())
		if string(req.Body()) != body {
			t.Errorf("body sent %q", req.Body())
		}
		err, server := verify(req, t0, NewSecret("secret"))
		if err != nil || server != sts {
			t.Errorf("%s: %v\nclient %q\nserver %q", ct, err, sts, server)
		}
		rc, err := r.GetBody() // a redirect or retry resends the same body
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(rc); string(b) != body {
			t.Errorf("GetBody gives %q", b)
		}
	}
}

func TestSecretRedacted(t *testing.T) {
	s := NewSecret("hunter2")
	for _, f := range []string{"%v", "%s", "%+v", "%#v"} {
		if got := sprintf(f, s); strings.Contains(got, "hunter2") || got != "[redacted]" {
			t.Errorf("%s prints %q", f, got)
		}
	}
}

// horizonStore is a nonce store that lost the nonces used before its horizon.
type horizonStore struct {
	*LocalNonceStore
	horizon int64
}

func (s horizonStore) HorizonMillis() int64 { return s.horizon }

// TestVerifierRefusesCallsSignedBeforeTheHorizon: a store with a horizon vouches for
// no call signed before it, nonce fresh or not; one signed at or after it passes.
func TestVerifierRefusesCallsSignedBeforeTheHorizon(t *testing.T) {
	sec := []*Secret{NewSecret("s")}
	v := Verifier{Nonces: horizonStore{NewLocalNonceStore(0, 1000), t0.UnixMilli()}}
	var sc Scratch
	before := fixedSigner("s")
	before.Now = func() time.Time { return t0.Add(-time.Millisecond) }
	req, _ := signedRequest(t, before, nil)
	if err := v.Verify(req, sec, t0.Add(time.Second), &sc); err != ErrSignedBeforeRestart {
		t.Errorf("signed a millisecond before the horizon: %v, want ErrSignedBeforeRestart", err)
	}
	forged, _ := signedRequest(t, fixedSigner("other"), nil)
	if err := v.Verify(forged, sec, t0, &sc); err != ErrInvalidSignature {
		t.Errorf("forged: %v, want ErrInvalidSignature (the signature is checked first)", err)
	}
	at := fixedSigner("s")
	at.Now = func() time.Time { return t0 }
	req, _ = signedRequest(t, at, nil)
	if err := v.Verify(req, sec, t0.Add(time.Second), &sc); err != nil {
		t.Errorf("signed at the horizon: %v", err)
	}
	if err := v.Verify(req, sec, t0.Add(2*time.Second), &sc); err != ErrNonceUsed {
		t.Errorf("signed at the horizon, sent again: %v, want ErrNonceUsed", err)
	}
}
