package proxy

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"
)

// fastConn is a data-plane TCP connection (a client's, one to a backend, or one under
// a client's TLS) whose deadlines rarely move its timers. fasthttp moves a
// connection's read and write deadlines on every request: three timer updates per
// call on the client's side (idle, read, write) and two on the backend's, a few
// percent of the gateway's CPU under load.
//
// fastConn keeps each deadline lazily. Setting one only records it, unless the timer
// armed on the socket would fire more than deadlineSlack after it; then the timer
// moves to the deadline plus the slack. A timer that fires before the recorded
// deadline (it was armed for an earlier request) is re-armed and the read or write
// goes on, so a deadline never fires early and at most deadlineSlack late, and a
// connection's timers move about once per timeout instead of on every request.
//
// Client connections are wrapped too, so fasthttp no longer sends a large response
// with one writev (it does that for a *net.TCPConn only): the server's write buffer
// is made large enough (Config.WriteBufferSize) that a response of up to that size is
// still one write.
//
// On Linux the data plane's sockets are pollConns in the process's poller (see
// poller_linux.go), which waits for readiness before it reads; fastConn serves the
// sockets that cannot join it (a descriptor past the poller's table) and other
// systems. (Waiting first through syscall.RawConn cannot work: its
// Read clears the poller's pending readiness before the first call, so data that
// arrived already would be missed.)
//
// On Linux its reads and writes are raw system calls through the poller (rawIO),
// which keep the runtime's monitor from handing Ps between threads under load.
//
// Deadlines are set by the goroutine that reads or writes (fasthttp's server and
// HostClient do), as one reader and one writer use a net.Conn; Close may come from
// anywhere.
type fastConn struct {
	net.Conn
	rd, wd lazyDeadline
	raw    *rawIO // nil: net.Conn's own Read and Write
	peerIP []byte // the client's address as X-Forwarded-For has it, once a request used it
}

// deadlineSlack is how late a deadline may fire. Timeouts of the data plane are
// seconds long; 50 ms keeps them honest.
const deadlineSlack = 50 * time.Millisecond

// lazyDeadline is one direction's deadline: the one asked for, and the one armed on
// the socket (zero for none).
type lazyDeadline struct {
	want, armed time.Time
}

// set records t as the deadline and returns the deadline to arm on the socket, if the
// armed one must move: when there is none, or it would fire more than deadlineSlack
// after t. Clearing (zero t) never moves it; a stale timer is cleared when it fires.
func (d *lazyDeadline) set(t time.Time) (arm time.Time, move bool) {
	d.want = t
	if t.IsZero() || (!d.armed.IsZero() && !d.armed.After(t.Add(deadlineSlack))) {
		return time.Time{}, false
	}
	d.armed = t.Add(deadlineSlack)
	return d.armed, true
}

// fired is called when the socket's timer ended a read or write at now. It reports
// whether the deadline asked for has not passed (retry), and the deadline to arm
// before retrying.
func (d *lazyDeadline) fired(now time.Time) (arm time.Time, retry bool) {
	switch {
	case d.want.IsZero():
		d.armed = time.Time{}
		return time.Time{}, true
	case now.Before(d.want):
		d.armed = d.want.Add(deadlineSlack)
		return d.armed, true
	}
	return time.Time{}, false
}

// newFastConn wraps c when it is a TCP connection; other connections (in-memory test
// listeners) are returned as they are.
func newFastConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	return &fastConn{Conn: c, raw: newRawIO(tc)}
}

func (c *fastConn) read(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.read(p)
	}
	return c.Conn.Read(p)
}

func (c *fastConn) write(p []byte) (int, error) {
	if c.raw != nil {
		return c.raw.write(p)
	}
	return c.Conn.Write(p)
}

func (c *fastConn) Read(p []byte) (int, error) {
	for {
		n, err := c.read(p)
		if err == nil || n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		arm, retry := c.rd.fired(time.Now())
		if !retry {
			return n, err
		}
		if err := c.Conn.SetReadDeadline(arm); err != nil {
			return 0, err
		}
	}
}

func (c *fastConn) Write(p []byte) (int, error) {
	written := 0
	for {
		n, err := c.write(p[written:])
		written += n
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return written, err
		}
		arm, retry := c.wd.fired(time.Now())
		if !retry {
			return written, err
		}
		if err := c.Conn.SetWriteDeadline(arm); err != nil {
			return written, err
		}
	}
}

func (c *fastConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *fastConn) SetReadDeadline(t time.Time) error {
	if arm, move := c.rd.set(t); move {
		return c.Conn.SetReadDeadline(arm)
	}
	return nil
}

func (c *fastConn) SetWriteDeadline(t time.Time) error {
	if arm, move := c.wd.set(t); move {
		return c.Conn.SetWriteDeadline(arm)
	}
	return nil
}

// fastListener hands out fastConns.
type fastListener struct{ net.Listener }

func (l fastListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newFastConn(c), nil
}

// NewListener wraps a data-plane TCP listener so that its connections move their
// timers rarely (see fastConn). Serve does it for a plain listener; a TLS one goes
// around it: tls.NewListener(proxy.NewListener(ln), cfg).
func NewListener(ln net.Listener) net.Listener {
	if _, ok := ln.(fastListener); ok {
		return ln
	}
	return fastListener{ln}
}

// dialBackend dials a backend connection as fasthttp would (its DNS-caching dialer),
// into the poller's set (Linux), else as a fastConn.
func dialBackend(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := fasthttp.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return pollDial(c), nil
}

// dialBackendNetpoller dials a backend connection that stays with the runtime's
// netpoller, as a fastConn (Config.Netpoller).
func dialBackendNetpoller(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := fasthttp.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return newFastConn(c), nil
}

// peerIPCache returns where a connection keeps its peer's address formatted, or nil.
func peerIPCache(c net.Conn) *[]byte {
	switch c := c.(type) {
	case *fastConn:
		return &c.peerIP
	case *pollConn:
		return &c.peerIP
	}
	return nil
}
