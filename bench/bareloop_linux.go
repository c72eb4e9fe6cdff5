package main

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"syscall"
	"unsafe"
)

// serveBareLoop is the bareloop experiment: the floor of a Go proxy built as nginx
// is, one process per CPU, each a single event loop over epoll that reads a socket
// only when epoll says it is readable. Go's netpoller reads first and waits on
// EAGAIN, so a fasthttp proxy makes about two failing reads per request (the
// backend's answer and the client's next request are never there yet) and parks a
// goroutine for each; nginx makes none. This measures what that model costs in Go,
// with the same header work as the bare proxy (parse, strip hop-by-hop, forward on
// a keep-alive connection, copy the answer back). It is not a server to deploy: no
// chunked bodies, no HEAD, no timeouts; each client connection has its own backend
// connection; a message has to fit its 64 KiB buffer.
func serveBareLoop(addr, upstream string) error {
	lfd, err := listenReusePort(addr)
	if err != nil {
		return err
	}
	up, err := net.ResolveTCPAddr("tcp4", upstream)
	if err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	l := &loop{ep: ep, lfd: lfd, upstream: &syscall.SockaddrInet4{Port: up.Port}}
	copy(l.upstream.Addr[:], up.IP.To4())
	if err := l.ctl(syscall.EPOLL_CTL_ADD, lfd, syscall.EPOLLIN); err != nil {
		return err
	}
	return l.run()
}

func listenReusePort(addr string) (int, error) {
	ta, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return -1, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	const soReusePort = 0xf
	for _, o := range []int{syscall.SO_REUSEADDR, soReusePort} {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, o, 1); err != nil {
			return -1, err
		}
	}
	sa := &syscall.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	if err := syscall.Bind(fd, sa); err != nil {
		return -1, err
	}
	return fd, syscall.Listen(fd, 4096)
}

const loopBufSize = 64 << 10

type loop struct {
	ep       int
	lfd      int
	upstream *syscall.SockaddrInet4
	conns    []*loopConn // by fd
	events   [256]syscall.EpollEvent
}

// loopConn is one socket: a client's or the backend connection paired with it.
type loopConn struct {
	fd     int
	peer   *loopConn
	client bool
	busy   bool // client: a request is at the backend
	in     []byte
	inN    int
	out    []byte // bytes still to write
	outOff int
	outOn  bool // registered for EPOLLOUT
}

func (l *loop) ctl(op, fd int, events uint32) error {
	ev := syscall.EpollEvent{Events: events, Fd: int32(fd)}
	return syscall.EpollCtl(l.ep, op, fd, &ev)
}

func (l *loop) run() error {
	for {
		// A raw call: the runtime need not know the thread blocks, as this process
		// has nothing else to run (GOMAXPROCS=1, one goroutine); a bounded wait lets
		// a preemption signal through.
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(l.ep),
			uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events)), 1000, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		for i := range int(n) {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.lfd {
				l.accept()
				continue
			}
			if fd >= len(l.conns) || l.conns[fd] == nil {
				continue
			}
			c := l.conns[fd]
			if ev.Events&syscall.EPOLLOUT != 0 && !l.flush(c) {
				continue
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				l.readable(c)
			}
		}
	}
}

func (l *loop) accept() {
	for {
		fd, _, err := syscall.Accept4(l.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN, or the backlog is someone else's now
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		c := l.add(fd, true)
		if c == nil {
			syscall.Close(fd)
		}
	}
}

func (l *loop) add(fd int, client bool) *loopConn {
	if err := l.ctl(syscall.EPOLL_CTL_ADD, fd, syscall.EPOLLIN|syscall.EPOLLRDHUP); err != nil {
		return nil
	}
	for fd >= len(l.conns) {
		l.conns = append(l.conns, nil)
	}
	c := &loopConn{fd: fd, client: client, in: make([]byte, loopBufSize)}
	l.conns[fd] = c
	return c
}

// close closes c and its peer.
func (l *loop) close(c *loopConn) {
	for _, x := range []*loopConn{c, c.peer} {
		if x != nil && l.conns[x.fd] == x {
			l.conns[x.fd] = nil
			syscall.Close(x.fd)
		}
	}
}

func (l *loop) readable(c *loopConn) {
	if c.inN == len(c.in) {
		l.close(c) // a message larger than the buffer
		return
	}
	n, err := syscall.Read(c.fd, c.in[c.inN:])
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return
	}
	if err != nil || n <= 0 {
		l.close(c)
		return
	}
	c.inN += n
	if c.client {
		l.clientData(c)
	} else {
		l.backendData(c)
	}
}

// clientData forwards the client's buffered request, once whole, to its backend
// connection.
func (l *loop) clientData(c *loopConn) {
	if c.busy {
		return // pipelined: the next request waits for this answer
	}
	size, err := messageSize(c.in[:c.inN])
	if err != nil {
		l.close(c)
		return
	}
	if size == 0 {
		return // not whole yet
	}
	b := c.peer
	if b == nil {
		if b = l.dial(); b == nil {
			l.close(c)
			return
		}
		b.peer, c.peer = c, b
	}
	b.out = appendForwarded(b.out[:0], c.in[:size])
	b.outOff = 0
	c.inN = copy(c.in, c.in[size:c.inN])
	c.busy = true
	l.flush(b)
}

// backendData copies the backend's answer, once whole, to the client.
func (l *loop) backendData(b *loopConn) {
	size, err := messageSize(b.in[:b.inN])
	if err != nil || b.peer == nil {
		l.close(b)
		return
	}
	if size == 0 {
		return
	}
	c := b.peer
	c.out = appendForwarded(c.out[:0], b.in[:size])
	c.outOff = 0
	b.inN = copy(b.in, b.in[size:b.inN])
	c.busy = false
	if l.flush(c) && c.inN > 0 {
		l.clientData(c)
	}
}

// dial opens a backend connection; connecting on loopback is immediate enough that
// the experiment waits for it.
func (l *loop) dial() *loopConn {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	if err := syscall.Connect(fd, l.upstream); err != nil {
		syscall.Close(fd)
		return nil
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil
	}
	return l.add(fd, false)
}

// flush writes what c has to write; it waits for EPOLLOUT on a full socket and
// reports whether everything went out.
func (l *loop) flush(c *loopConn) bool {
	for c.outOff < len(c.out) {
		n, err := syscall.Write(c.fd, c.out[c.outOff:])
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			if !c.outOn {
				c.outOn = true
				if l.ctl(syscall.EPOLL_CTL_MOD, c.fd, syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLOUT) != nil {
					l.close(c)
				}
			}
			return false
		}
		if err != nil {
			l.close(c)
			return false
		}
		c.outOff += n
	}
	c.out, c.outOff = c.out[:0], 0
	if c.outOn {
		c.outOn = false
		if l.ctl(syscall.EPOLL_CTL_MOD, c.fd, syscall.EPOLLIN|syscall.EPOLLRDHUP) != nil {
			l.close(c)
			return false
		}
	}
	return true
}

var (
	errChunked = errors.New("bareloop: chunked bodies are not supported")
	errHead    = errors.New("bareloop: malformed head")
	headEnd    = []byte("\r\n\r\n")
	crlf       = []byte("\r\n")
	colon      = []byte(":")
)

// messageSize returns the size of the whole HTTP/1.1 message at the start of b
// (head and Content-Length body), or 0 while it is not all there.
func messageSize(b []byte) (int, error) {
	end := bytes.Index(b, headEnd)
	if end < 0 {
		return 0, nil
	}
	head := b[:end+4]
	length := 0
	for rest := head; len(rest) > 0; {
		var line []byte
		line, rest = nextLine(rest)
		name, value, ok := bytes.Cut(line, colon)
		if !ok {
			continue
		}
		switch {
		case equalFoldASCII(name, "content-length"):
			v, err := strconv.Atoi(string(bytes.TrimSpace(value)))
			if err != nil || v < 0 {
				return 0, errHead
			}
			length = v
		case equalFoldASCII(name, "transfer-encoding"):
			return 0, errChunked
		}
	}
	if len(b) < len(head)+length {
		return 0, nil
	}
	return len(head) + length, nil
}

// appendForwarded appends msg with its hop-by-hop headers left out.
func appendForwarded(dst, msg []byte) []byte {
	end := bytes.Index(msg, headEnd) + 2 // keep the last header line's CRLF
	first := bytes.IndexByte(msg, '\n') + 1
	dst = append(dst, msg[:first]...)
	for rest := msg[first:end]; len(rest) > 0; {
		var line []byte
		line, rest = nextLine(rest)
		if len(line) == 0 {
			continue
		}
		name, _, _ := bytes.Cut(line, colon)
		if isHopHeader(name) {
			continue
		}
		dst = append(dst, line...)
		dst = append(dst, '\r', '\n')
	}
	return append(dst, msg[end:]...)
}

func isHopHeader(name []byte) bool {
	for _, h := range hopHeaders {
		if equalFoldASCII(name, h) {
			return true
		}
	}
	return false
}

// nextLine splits the first CRLF-terminated line off head, without its CRLF.
func nextLine(head []byte) (line, rest []byte) {
	i := bytes.Index(head, crlf)
	if i < 0 {
		return head, nil
	}
	return head[:i], head[i+2:]
}

func equalFoldASCII(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i]|0x20, s[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}
