package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestHopByHopCanonical guards the names the forward step deletes or peeks with
// fasthttp's normalizing switched off: each must already be in canonical form, or the
// delete would miss the header.
func TestHopByHopCanonical(t *testing.T) {
	names := append([]string{hdrExpect, hdrConnection, string(hdrXFF)}, hopByHopHeaders...)
	for _, n := range names {
		if c := string(fasthttp.AppendNormalizedHeaderKey(nil, n)); c != n {
			t.Errorf("%q is not canonical (%q): deleting it un-normalized would miss the header", n, c)
		}
	}
}

// TestHopByHopAnyCase checks that hop-by-hop headers go whatever case the client and
// the backend wrote them in.
func TestHopByHopAnyCase(t *testing.T) {
	var req fasthttp.Request
	req.Header.Set("keep-alive", "timeout=5")
	req.Header.Set("TRANSFER-ENCODING", "identity")
	req.Header.Set("proxy-authorization", "Basic x")
	req.Header.Set("te", "trailers")
	req.Header.Set("upgrade", "h2c")
	req.Header.Set("expect", "100-continue")
	req.Header.Set("x-forwarded-for", "192.0.2.1")
	req.Header.Set("X-Keep", "1")
	req.Header.Set("connection", "X-Drop, keep-alive")
	req.Header.Set("x-drop", "1")
	c := &Call{}
	stripRequestHopByHop(&req.Header, c, hdrExpect)
	for _, n := range []string{"Keep-Alive", "Transfer-Encoding", "Proxy-Authorization", "Te", "Upgrade", "Expect", "Connection", "X-Drop"} {
		if v := req.Header.Peek(n); len(v) > 0 {
			t.Errorf("request kept %s: %q", n, v)
		}
	}
	if string(req.Header.Peek("X-Keep")) != "1" || string(req.Header.Peek("X-Forwarded-For")) != "192.0.2.1" {
		t.Errorf("request lost an end-to-end header:\n%s", req.Header.String())
	}
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	c.Ctx = &ctx
	c.appendXFF(&ctx.Request)
	if got := string(ctx.Request.Header.Peek("X-Forwarded-For")); got != "192.0.2.1, 0.0.0.0" {
		t.Errorf("X-Forwarded-For %q", got)
	}

	var resp fasthttp.Response
	resp.Header.Set("keep-alive", "timeout=5")
	resp.Header.Set("UPGRADE", "h2c")
	resp.Header.Set("connection", "x-gone")
	resp.Header.Set("X-Gone", "1")
	resp.Header.Set("X-Stay", "1")
	stripResponseHopByHop(&resp.Header, c)
	for _, n := range []string{"Keep-Alive", "Upgrade", "X-Gone"} {
		if v := resp.Header.Peek(n); len(v) > 0 {
			t.Errorf("response kept %s: %q", n, v)
		}
	}
	if string(resp.Header.Peek("X-Stay")) != "1" {
		t.Errorf("response lost X-Stay:\n%s", resp.Header.String())
	}
	// Normalizing is back on for everything after.
	req.Header.Set("x-after", "1")
	if string(req.Header.Peek("X-AFTER")) != "1" {
		t.Error("request header normalizing left off")
	}
}
