//go:build !race

package signature

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The hot path allocates nothing per request once its buffers have grown: Verify (with
// the local nonce store), AppendStringToSign and BackendKey.Sign. The race detector
// allocates on its own, hence the build tag.

func TestVerifyAllocs(t *testing.T) {
	for _, v := range loadVectors(t) {
		req := serverRequest(t, v, v.Method)
		req.Header.Set(HeaderSignature, v.SHA256)
		secrets := []*Secret{NewSecret("old"), NewSecret(v.AppSecret)}
		ms, _ := parseMillis(req.Header.Peek(HeaderTimestamp))
		now := time.UnixMilli(ms)
		var sc Scratch
		ver := Verifier{}
		if err := ver.Verify(req, secrets, now, &sc); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		if n := testing.AllocsPerRun(200, func() {
			if err := ver.Verify(req, secrets, now, &sc); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: Verify allocates %.1f times", v.Name, n)
		}
		// A refusal is as cheap: the caller renders the message into its own buffer.
		req.Header.Set(HeaderSignature, v.SHA1)
		msg := make([]byte, 0, 1024)
		if n := testing.AllocsPerRun(200, func() {
			if err := ver.Verify(req, secrets, now, &sc); err == ErrInvalidSignature {
				msg = AppendInvalidSignatureMessage(msg[:0], sc.StringToSign())
			}
		}); n != 0 {
			t.Errorf("%s: refusal allocates %.1f times", v.Name, n)
		}
	}
}

func TestVerifyWithNoncesAllocs(t *testing.T) {
	v := loadVectors(t)[0]
	req := serverRequest(t, v, v.Method)
	req.Header.Set(HeaderSignature, v.SHA256)
	secrets := []*Secret{NewSecret(v.AppSecret)}
	ms, _ := parseMillis(req.Header.Peek(HeaderTimestamp))
	now := time.UnixMilli(ms)
	store := NewLocalNonceStore(time.Minute, 1<<14)
	ver := Verifier{Nonces: store}
	var sc Scratch
	if err := ver.Verify(req, secrets, now, &sc); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() {
		if err := ver.Verify(req, secrets, now, &sc); err != ErrNonceUsed {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("replayed Verify allocates %.1f times", n)
	}
	// Fresh nonces, each stored: the store's maps are preallocated.
	nonce := []byte("00000000-0000-4000-8000-000000000000")
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		i++
		nonce[0], nonce[1], nonce[2] = byte('a'+i%26), byte('a'+i/26%26), byte('a'+i/676%26)
		store.Use(nonce, now)
	}); n != 0 {
		t.Errorf("LocalNonceStore.Use allocates %.1f times", n)
	}
}

func TestBackendSignAllocs(t *testing.T) {
	req := new(fasthttp.Request)
	req.SetRequestURI("http://127.0.0.1:9001/v2/weather/paris?days=3&unit=c")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyString(`{"qty":2}`)
	req.Header.Set("X-Ca-Request-Id", "5f0c0f6e-0000-4000-8000-000000000000")
	req.Header.Set("X-Ca-Key", "203752345")
	req.Header.Set("X-Days", "3")
	key := NewBackendKey("DemoKey1", "DemoSecret1")
	headers := []string{"x-days", "x-client-ip"}
	var sc Scratch
	key.Sign(req, headers, &sc)
	if n := testing.AllocsPerRun(200, func() { key.Sign(req, headers, &sc) }); n != 0 {
		t.Errorf("BackendKey.Sign allocates %.1f times", n)
	}
}

func TestAppendStringToSignAllocs(t *testing.T) {
	req := wire(t, "POST", "/p?z=1&a=2&m=%E5%8C%97", []string{
		"Content-Type: application/x-www-form-urlencoded", "x-a: 1", "X-Ca-Signature-Headers: x-a,x-b",
	}, "f=1&g=2")
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(200, func() { buf = AppendStringToSign(buf[:0], req) }); n != 0 {
		t.Errorf("AppendStringToSign allocates %.1f times", n)
	}
}
