//go:build !linux

package proxy

import "net"

// rawIO is Linux's (rawio_linux.go); elsewhere connections use net.Conn's own calls.
type rawIO struct{}

func newRawIO(*net.TCPConn) *rawIO { return nil }

func (*rawIO) read([]byte) (int, error)  { panic("unreachable") }
func (*rawIO) write([]byte) (int, error) { panic("unreachable") }
