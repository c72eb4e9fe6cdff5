//go:build !linux

package proxy

import "net"

// NewPollListener returns ln: the poller is Linux's (epoll).
func NewPollListener(ln net.Listener) net.Listener { return ln }

func pollDial(c net.Conn) net.Conn { return newFastConn(c) }

// pollConn exists on Linux only.
type pollConn struct {
	net.Conn
	peerIP []byte
}
