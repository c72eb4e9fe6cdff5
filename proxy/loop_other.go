//go:build !linux

package proxy

import (
	"context"
	"net"
	"time"
)

// loopConn exists on Linux only (the event loop runs on the poller): elsewhere no
// Call has one, so its methods are never reached.
type loopConn struct{}

func (lc *loopConn) forward(c *Call, h *httpBackend, sent time.Duration) bool {
	panic("proxy: event loop without a poller")
}

func (lc *loopConn) after(c *Call, d time.Duration, answer func(*Call) bool) bool {
	panic("proxy: event loop without a poller")
}

// serveLoop serves as without the loop: it needs the poller.
func (p *Proxy) serveLoop(ln net.Listener) error { return p.serveServer(ln) }

func (p *Proxy) drainLoop(context.Context) error { return nil }
