package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// clientCall sends one request for url through b, with a 5 s deadline.
func clientCall(b *backendClient, method, url string) (*fasthttp.Response, error) {
	req, resp := &fasthttp.Request{}, &fasthttp.Response{}
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	now := time.Now()
	return resp, b.do(req, resp, now, now.Add(5*time.Second))
}

func openConns(b *backendClient) (open, idle int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open, len(b.idle)
}

// TestBackendClientWaitsThenBusy: with every connection in use, a call waits up to
// maxWait for one, then fails with ErrNoFreeConns; the connection, once free, is
// reused rather than a second one dialed.
func TestBackendClientWaitsThenBusy(t *testing.T) {
	hold := make(chan struct{})
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/x" && ctx.IsPost() {
			<-hold
		}
		ctx.SetBodyString("ok")
	})
	b := newBackendClient(addr, nil, 1, 1<<20)
	b.maxWait = 100 * time.Millisecond
	t.Cleanup(b.CloseIdleConnections)

	var wg sync.WaitGroup
	wg.Add(1)
	var slowErr error
	go func() { defer wg.Done(); _, slowErr = clientCall(b, "POST", "http://"+addr+"/x") }()
	deadline := time.Now().Add(5 * time.Second)
	for open, _ := openConns(b); open == 0 && time.Now().Before(deadline); open, _ = openConns(b) {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if _, err := clientCall(b, "GET", "http://"+addr+"/x"); !errors.Is(err, fasthttp.ErrNoFreeConns) {
		t.Fatalf("a call with the only connection busy: %v, want ErrNoFreeConns", err)
	}
	if w := time.Since(start); w < 90*time.Millisecond || w > 2*time.Second {
		t.Errorf("gave up after %v, want about maxWait (100ms)", w)
	}

	// A waiter gets the connection as soon as it frees up.
	b.maxWait = 5 * time.Second
	got := make(chan error, 1)
	go func() { _, err := clientCall(b, "GET", "http://"+addr+"/x"); got <- err }()
	time.Sleep(20 * time.Millisecond) // let it wait
	close(hold)
	wg.Wait()
	if slowErr != nil {
		t.Fatalf("held call: %v", slowErr)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting call: %v", err)
	}
	if open, idle := openConns(b); open != 1 || idle != 1 {
		t.Errorf("open %d, idle %d after the calls; want the one connection, idle", open, idle)
	}
}

// TestBackendClientRetriesAStaleConnection: a backend that closed a keep-alive
// connection while it was idle (without saying so) costs an idempotent call nothing:
// it goes again on a new connection. A POST is not sent twice.
func TestBackendClientRetriesAStaleConnection(t *testing.T) {
	ln := listen(t)
	var served sync.WaitGroup
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close(); served.Wait() })
	served.Add(1)
	go func() {
		defer served.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// One request per connection, then close it, keep-alive promised.
			br := bufio.NewReader(c)
			var req fasthttp.Request
			if req.Read(br) == nil {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
			}
			_ = c.Close()
		}
	}()
	addr := ln.Addr().String()
	b := newBackendClient(addr, nil, 4, 1<<20)
	t.Cleanup(b.CloseIdleConnections)

	if _, err := clientCall(b, "GET", "http://"+addr+"/x"); err != nil {
		t.Fatalf("first call: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // the backend's close reaches the idle connection
	resp, err := clientCall(b, "GET", "http://"+addr+"/x")
	if err != nil || string(resp.Body()) != "ok" {
		t.Fatalf("GET on a stale connection: %v %q, want it retried on a new one", err, resp.Body())
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := clientCall(b, "POST", "http://"+addr+"/x"); err == nil {
		t.Fatal("POST on a stale connection succeeded: it must not be sent twice")
	}
	// The POST took the retried GET's connection, stale again, and dropped it.
	if open, idle := openConns(b); open != 0 || idle != 0 {
		t.Errorf("open %d, idle %d after the failed POST, want none", open, idle)
	}
}

// TestBackendClientClosesIdle: connections idle longer than idleAfter are closed.
func TestBackendClientClosesIdle(t *testing.T) {
	addr := startBackend(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	b := newBackendClient(addr, nil, 4, 1<<20)
	b.idleAfter = 40 * time.Millisecond
	t.Cleanup(b.CloseIdleConnections)
	if _, err := clientCall(b, "GET", "http://"+addr+"/x"); err != nil {
		t.Fatal(err)
	}
	if open, idle := openConns(b); open != 1 || idle != 1 {
		t.Fatalf("open %d, idle %d after a call, want 1, 1", open, idle)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open, _ := openConns(b); open != 0; open, _ = openConns(b) {
		if time.Now().After(deadline) {
			t.Fatal("idle connection not closed within 5s (idleAfter 40ms)")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBackendClientTLS: an https backend, trusted through the route's CA.
func TestBackendClientTLS(t *testing.T) {
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("secure " + r.Method))
	}))
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()
	host, _, _ := net.SplitHostPort(addr)
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())

	b := newBackendClient(addr, &tls.Config{ServerName: host, RootCAs: pool, MinVersion: tls.VersionTLS12}, 4, 1<<20)
	t.Cleanup(b.CloseIdleConnections)
	for i := range 2 {
		resp, err := clientCall(b, "GET", "https://"+addr+"/x")
		if err != nil || string(resp.Body()) != "secure GET" {
			t.Fatalf("call %d: %v %q", i, err, resp.Body())
		}
	}
	if open, _ := openConns(b); open != 1 {
		t.Errorf("%d connections for two calls in a row, want one kept alive", open)
	}

	untrusted := newBackendClient(addr, &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}, 4, 1<<20)
	if _, err := clientCall(untrusted, "GET", "https://"+addr+"/x"); err == nil {
		t.Error("a backend certificate from an unknown CA was accepted")
	}
	if open, _ := openConns(untrusted); open != 0 {
		t.Errorf("a failed handshake left %d connections counted", open)
	}
}
