package proxy

import (
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// fastConn is a data-plane TCP connection (one to a backend, or under a client's TLS)
// that moves its timers less often than the net.Conn it wraps. fasthttp moves a
// connection's read and write deadlines on every request (five timer updates per
// forwarded call, a few percent of the gateway's CPU under load). fastConn arms a
// deadline deadlineSlack past the one asked for and skips later requests that the
// armed deadline already covers within that slack: a timeout fires at most
// deadlineSlack late, and the timers move about every deadlineSlack per connection
// instead of on every request.
//
// Plain TCP client connections are not wrapped: fasthttp sends a response larger than
// its write buffer with one writev only to a *net.TCPConn, and losing that cost more
// than the timers save (anon-4K went from 1.25x to 1.6x nginx's CPU).
//
// (Reading without the EAGAIN read Go makes before it waits for the poller was tried
// too, through syscall.RawConn: it cannot work, since RawConn.Read clears the poller's
// pending readiness before its first call, so waiting first misses data that arrived
// already.)
//
// Deadlines are set by the connection's own goroutine (fasthttp's server and
// HostClient do), as one reader and one writer use a net.Conn.
type fastConn struct {
	net.Conn
	rd, wd time.Time // armed deadlines, slack included; zero for none
}

// deadlineSlack is how late a deadline may fire. Timeouts of the data plane are
// seconds long; 50 ms keeps them honest while moving timers 20 times a second per
// connection at most, whatever the request rate.
const deadlineSlack = 50 * time.Millisecond

// newFastConn wraps c when it is a TCP connection; other connections (TLS, in-memory
// test listeners) are returned as they are.
func newFastConn(c net.Conn) net.Conn {
	if _, ok := c.(*net.TCPConn); !ok {
		return c
	}
	return &fastConn{Conn: c}
}

func (c *fastConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *fastConn) SetReadDeadline(t time.Time) error {
	if covered(&c.rd, t) {
		return nil
	}
	return c.Conn.SetReadDeadline(c.rd)
}

func (c *fastConn) SetWriteDeadline(t time.Time) error {
	if covered(&c.wd, t) {
		return nil
	}
	return c.Conn.SetWriteDeadline(c.wd)
}

// covered reports whether the armed deadline already serves a request for t: no
// earlier than t and at most deadlineSlack later. Otherwise it sets armed to what
// must be armed now (t plus the slack, or no deadline).
func covered(armed *time.Time, t time.Time) bool {
	if t.IsZero() {
		if armed.IsZero() {
			return true
		}
		*armed = time.Time{}
		return false
	}
	if !armed.IsZero() && !armed.Before(t) && armed.Sub(t) <= deadlineSlack {
		return true
	}
	*armed = t.Add(deadlineSlack)
	return false
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

// NewListener wraps a TCP listener for a TLS listener of the data plane, so that its
// connections move their timers less often: tls.NewListener(proxy.NewListener(ln), cfg).
// (A TLS connection never gets fasthttp's writev; see fastConn.)
func NewListener(ln net.Listener) net.Listener { return fastListener{ln} }

// dialBackend dials a backend connection as fasthttp would (its DNS-caching dialer),
// as a fastConn.
func dialBackend(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := fasthttp.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return newFastConn(c), nil
}
