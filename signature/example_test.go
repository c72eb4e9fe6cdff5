package signature_test

import (
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/tollgate/tollgate/signature"
	"github.com/valyala/fasthttp"
)

// A backend behind Tollgate checks that a call came through the gateway. The keys are
// the backendKeys of the declarative file; keep the old one here while a key rotates.
func ExampleVerifyBackendRequest() {
	backendKeys := map[string]string{"DemoKey1": "DemoSecret1"}
	secretFor := func(key string) (string, bool) {
		s, ok := backendKeys[key]
		return s, ok
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := signature.VerifyBackendRequest(r, secretFor); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		fmt.Fprintln(w, "hello from the backend")
	})

	// A call that did not come through the gateway is refused.
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest("GET", "/orders", nil))
	fmt.Print(rec.Code, " ", rec.Body.String())
	if rec.Code != http.StatusForbidden {
		log.Fatal("unsigned call accepted")
	}
	// Output: 403 Missing Proxy Signature
}

// A client signs a call the way Alibaba Cloud API Gateway's SDKs do.
func ExampleSigner_SignHTTP() {
	s := signature.NewSigner("203752345", "app-secret")
	s.Stage = "RELEASE"
	r, _ := http.NewRequest("GET", "http://weather.localhost:8080/cities/paris?days=3", nil)
	if _, err := s.SignHTTP(r); err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Header.Get(signature.HeaderSignatureHeaders))
	// Output: x-ca-key,x-ca-nonce,x-ca-signature-method,x-ca-stage,x-ca-timestamp
}

// The proxy's auth stage: find the app by X-Ca-Key, verify, and answer a bad
// signature with the server's string-to-sign.
func ExampleVerifier_Verify() {
	// Compiled once per configuration: each app's live secrets (two while rotating).
	apps := map[string][]*signature.Secret{
		"203752345": {signature.NewSecret("new-secret"), signature.NewSecret("old-secret")},
	}
	verifier := &signature.Verifier{Nonces: signature.NewLocalNonceStore(0, 1<<16)}

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.SetRequestURI("http://weather.localhost/cities/paris?days=3")
	signature.NewSigner("203752345", "old-secret").Sign(req) // a client still on the old secret

	var sc signature.Scratch // one per in-flight request, reused
	secrets, ok := apps[string(signature.Key(req))]
	if !ok {
		fmt.Println(signature.ErrInvalidAppKey)
		return
	}
	err := verifier.Verify(req, secrets, time.Now(), &sc)
	fmt.Println("first call:", err)
	err = verifier.Verify(req, secrets, time.Now(), &sc)
	fmt.Println("replayed:", err)

	req.Header.Set(signature.HeaderSignature, "Zm9yZ2Vk")
	req.Header.Set(signature.HeaderNonce, "another")
	if err := verifier.Verify(req, secrets, time.Now(), &sc); err == signature.ErrInvalidSignature {
		msg := signature.AppendInvalidSignatureMessage(nil, sc.StringToSign())
		fmt.Println(string(msg[:57]))
	}
	// Output:
	// first call: <nil>
	// replayed: Nonce Used
	// Invalid Signature, Server StringToSign:`GET#####x-ca-key:
}
