package main

import (
	"time"

	"github.com/valyala/fasthttp"

	"github.com/tollgate/tollgate/signature"
)

// signer signs requests the way an Alibaba Cloud API Gateway client does, with a fresh
// nonce and timestamp per call: signature.Signer, the same code `tollgate call` uses,
// which signs without allocating. One signer belongs to one connection.
type signer struct {
	s   *signature.Signer
	buf []byte
}

func newSigner(key, secret string) *signer {
	return &signer{s: signature.NewSigner(key, secret)}
}

// sign sets the signature headers on req, whose method, URI and headers are otherwise
// complete. The timestamp is the signer's clock (now is kept for the call sites that
// already hold it).
func (s *signer) sign(req *fasthttp.Request, _ time.Time) {
	if len(req.Header.Peek(signature.HeaderStage)) == 0 {
		req.Header.Set(signature.HeaderStage, "RELEASE")
	}
	s.buf = s.s.AppendSign(s.buf[:0], req)
}
