package main

import (
	"time"

	"github.com/valyala/fasthttp"
)

// hopHeaders are the hop-by-hop headers a proxy must not forward (RFC 9110
// §7.6.1), as net/http/httputil's ReverseProxy strips them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// serveBareProxy is the bare reverse proxy: the least a fasthttp gateway does
// per request (parse, strip hop-by-hop headers, forward on a pooled keep-alive
// connection, copy the answer back). It is the floor Tollgate's pipeline is
// measured against; keep it this small.
func serveBareProxy(addr, upstream string) error {
	hc := &fasthttp.HostClient{
		Addr:                upstream,
		MaxConns:            1024,
		ReadTimeout:         10 * time.Second,
		WriteTimeout:        10 * time.Second,
		MaxResponseBodySize: 16 << 20,
	}
	s := &fasthttp.Server{
		Name:                  "bareproxy",
		NoDefaultServerHeader: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			req, resp := &ctx.Request, &ctx.Response
			for _, h := range hopHeaders {
				req.Header.Del(h)
			}
			if err := hc.Do(req, resp); err != nil {
				ctx.Error("bad gateway: "+err.Error(), fasthttp.StatusBadGateway)
				return
			}
			for _, h := range hopHeaders {
				resp.Header.Del(h)
			}
		},
	}
	return s.ListenAndServe(addr)
}
