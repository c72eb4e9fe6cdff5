package proxy

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/signature"
)

// verifyGatewaySignature is an independent implementation of DESIGN.md's backend
// signature, written from the published algorithm with net/http and crypto/hmac only:
//
//	StringToSign = METHOD "\n" Content-MD5 "\n" Headers PathAndParameters
//
// Content-MD5 only for a non-form body of POST or PUT; Headers each "name:value\n" for
// the names in X-Ca-Proxy-Signature-Headers; the path decoded, then "?" and the query
// (and form) parameters sorted by key, "key=value" ("key" alone when empty), joined by
// "&". It also insists that every X-Ca-* header the backend received is signed. It
// returns the key name that verified.
func verifyGatewaySignature(r *http.Request, secrets map[string]string) (string, error) {
	sig := r.Header.Get("X-Ca-Proxy-Signature")
	key := r.Header.Get("X-Ca-Proxy-Signature-Secret-Key")
	secret, ok := secrets[key]
	if sig == "" || !ok {
		return key, fmt.Errorf("no signature or unknown key %q", key)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return key, err
	}
	form := strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/x-www-form-urlencoded")
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	if (r.Method == "POST" || r.Method == "PUT") && len(body) > 0 && !form {
		sum := md5.Sum(body)
		b.WriteString(base64.StdEncoding.EncodeToString(sum[:]))
	}
	b.WriteString("\n")
	signed := map[string]bool{}
	for _, name := range strings.Split(r.Header.Get("X-Ca-Proxy-Signature-Headers"), ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		signed[strings.ToLower(name)] = true
		b.WriteString(name + ":" + r.Header.Get(name) + "\n")
	}
	for name := range r.Header {
		l := strings.ToLower(name)
		if strings.HasPrefix(l, "x-ca-") && !strings.HasPrefix(l, "x-ca-proxy-signature") && !signed[l] {
			return key, fmt.Errorf("header %s is not signed", name)
		}
	}
	b.WriteString(r.URL.Path)
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return key, err
	}
	if form {
		f, err := url.ParseQuery(string(body))
		if err != nil {
			return key, err
		}
		for k, v := range f {
			q[k] = append(q[k], v...)
		}
	}
	if len(q) > 0 {
		keys := make([]string, 0, len(q))
		for k := range q {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("?")
		for i, k := range keys {
			if i > 0 {
				b.WriteString("&")
			}
			v := strings.Join(q[k], ",")
			if v == "" {
				b.WriteString(k)
			} else {
				b.WriteString(k + "=" + v)
			}
		}
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(b.String()))
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return key, errors.New("signature mismatch over " + strings.ReplaceAll(b.String(), "\n", "#"))
	}
	return key, nil
}

// signedBackend runs a net/http backend on 127.0.0.1 that checks every call's gateway
// signature, counting calls per key and failures.
type signedBackend struct {
	addr    string
	secrets map[string]string
	mu      sync.Mutex
	byKey   map[string]int
	bad     []string
}

func startSignedBackend(t *testing.T, secrets map[string]string) *signedBackend {
	sb := &signedBackend{secrets: secrets, byKey: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, err := verifyGatewaySignature(r, sb.secrets)
		sb.mu.Lock()
		if err != nil {
			sb.bad = append(sb.bad, err.Error())
		} else {
			sb.byKey[key]++
		}
		sb.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, "signed by "+key)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	sb.addr = ln.Addr().String()
	return sb
}

func (sb *signedBackend) counts() (map[string]int, []string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	m := map[string]int{}
	for k, v := range sb.byKey {
		m[k] = v
	}
	return m, append([]string(nil), sb.bad...)
}

func TestBackendSignature(t *testing.T) {
	sb := startSignedBackend(t, map[string]string{"KA": "secret-a"})
	url := "http://" + sb.addr
	form := httpDef("POST", "/form", url, "")
	form.Backend.Signature = "ka"
	js := httpDef("PUT", "/json/[id]", url, "/items/[id]")
	js.Backend.Signature = "ka"
	st := newStateOf().
		api("g", "five", fiveParamsDef(url, "ka"), fsm.StageRelease).
		api("g", "form", form, fsm.StageRelease).
		api("g", "json", js, fsm.StageRelease).
		app("mobile", "AK1", "C1", "s1").
		grant("mobile", "g/five", nil, fsm.StageRelease).
		backendKey("ka", "KA", "secret-a")
	g := startProxy(t, Config{}, st.s)

	sg := signature.NewSigner("AK1", "s1")
	for _, c := range []struct {
		name   string
		r      func() result
		substr string
	}{
		{"five params, mapped headers and system params", func() result {
			return g.signedCall(t, sg, "GET", "g.localhost", "/five/abc?b=7&c=down", nil, nil, "X-D", "d", "X-E", "false", "X-Ca-Custom", "x")
		}, "signed by KA"},
		{"form body", func() result {
			return g.call(t, "POST", "g.localhost", "/form?z=1&a=", []byte("b=hello+world&a=2"), "Content-Type", "application/x-www-form-urlencoded")
		}, "signed by KA"},
		{"JSON body, escaped path", func() result {
			return g.call(t, "PUT", "g.localhost", "/json/s%C3%A3o%20paulo", []byte(`{"x":1}`), "Content-Type", "application/json")
		}, "signed by KA"},
		{"client's own proxy signature replaced", func() result {
			return g.call(t, "POST", "g.localhost", "/form", nil, "X-Ca-Proxy-Signature", "forged", "X-Ca-Proxy-Signature-Secret-Key", "KZ")
		}, "signed by KA"},
	} {
		r := c.r()
		if r.status != 200 || !strings.Contains(r.body, c.substr) {
			t.Errorf("%s: %d %q %s", c.name, r.status, r.body, r.hdr["X-Ca-Error-Message"])
		}
	}
	if _, bad := sb.counts(); len(bad) > 0 {
		t.Errorf("backend refused: %v", bad)
	}

	// An API naming a key that does not exist is refused, never sent unsigned.
	missing := st.copyState()
	delete(missing.s.BackendKeys, "ka")
	missing.s.Index++
	g.p.Update(missing.s)
	wantError(t, g.call(t, "POST", "g.localhost", "/form", nil), ErrInternal)
}

// TestBackendKeySwitchUnderLoad alternates the API between backend keys A and B with
// Update while clients call: every call is signed whole by one key or the other.
func TestBackendKeySwitchUnderLoad(t *testing.T) {
	sb := startSignedBackend(t, map[string]string{"KA": "secret-a", "KB": "secret-b"})
	url := "http://" + sb.addr
	base := newStateOf().backendKey("a", "KA", "secret-a").backendKey("b", "KB", "secret-b")
	defA := fiveParamsDef(url, "a")
	defA.Auth = fsm.AuthAnonymous
	defB := defA
	defB.Backend.Signature = "b"
	sA := base.copyState().api("g", "five", defA, fsm.StageRelease)
	sB := sA.copyState().api("g", "five", defB, fsm.StageRelease)
	g := startProxy(t, Config{}, sA.s)

	stop := make(chan struct{})
	var updates atomic.Int64
	var uwg sync.WaitGroup
	uwg.Add(1)
	go func() {
		defer uwg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				g.p.Update(sB.s)
			} else {
				g.p.Update(sA.s)
			}
			updates.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	var calls, failed atomic.Int64
	deadline := time.Now().Add(1500 * time.Millisecond)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				r := g.call(t, "GET", "g.localhost", "/five/abc?b=5&c=up", nil, "X-D", "d", "X-Ca-Trace", "t")
				calls.Add(1)
				if r.status != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	uwg.Wait()
	byKey, bad := sb.counts()
	t.Logf("%d calls over %d updates: %v", calls.Load(), updates.Load(), byKey)
	if len(bad) > 0 {
		t.Fatalf("%d invalid signatures, first: %s", len(bad), bad[0])
	}
	if failed.Load() > 0 {
		t.Errorf("%d calls failed", failed.Load())
	}
	if byKey["KA"] == 0 || byKey["KB"] == 0 || updates.Load() < 10 {
		t.Errorf("the switch was not exercised: %v over %d updates", byKey, updates.Load())
	}
}
