package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP connection's socket with raw system calls, through
// the connection's poller (syscall.RawConn): the same read-first, wait-on-EAGAIN
// cycle as net.Conn, without the runtime's bookkeeping around a system call that might
// block. A socket of the runtime's is non-blocking, so its reads and writes never do.
//
// Under load that bookkeeping cost more than its own CPU: a thread the kernel
// preempts inside a write (the write woke its peer) leaves its P "in a syscall", and
// the runtime's monitor, seeing that, hands the P to another thread and keeps
// itself on its 20 µs wake-up cycle. That monitor alone took about 6% of the
// gateway's CPU; raw calls keep the P running instead (see fastConn).
//
// The callbacks are built once per connection, so a read or write allocates nothing;
// p, n and errno carry one call's arguments and results. One reader and one writer
// use a connection at a time, as net.Conn's users do.
type rawIO struct {
	rc      syscall.RawConn
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
	laddr   net.Addr
	raddr   net.Addr

	rp, wp []byte
	rn, wn int
	re, we syscall.Errno
}

func newRawIO(c *net.TCPConn) *rawIO {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc, laddr: c.LocalAddr(), raddr: c.RemoteAddr()}
	r.readFn, r.writeFn = r.doRead, r.doWrite
	return r
}

func (r *rawIO) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.rp))), uintptr(len(r.rp)))
		switch e {
		case 0:
			r.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.re = e
		return true
	}
}

func (r *rawIO) doWrite(fd uintptr) bool {
	for r.wn < len(r.wp) {
		rest := r.wp[r.wn:]
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(rest))), uintptr(len(rest)))
		switch e {
		case 0:
			if n == 0 {
				return true // nothing taken and no error: write reports it short
			}
			r.wn += min(int(n), len(rest))
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.we = e
		return true
	}
	return true
}

func (r *rawIO) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp, r.rn, r.re = p, 0, 0
	err := r.rc.Read(r.readFn)
	n, e := r.rn, r.re
	r.rp = nil
	switch {
	case err != nil:
		return 0, renameOp(err, "read")
	case e != 0:
		return 0, r.opError("read", e)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *rawIO) write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wp, r.wn, r.we = p, 0, 0
	err := r.rc.Write(r.writeFn)
	n, e := r.wn, r.we
	r.wp = nil
	switch {
	case err != nil:
		return n, renameOp(err, "write")
	case e != 0:
		return n, r.opError("write", e)
	case n < len(p):
		// The socket took nothing and said nothing, as internal/poll reports it.
		return n, io.ErrUnexpectedEOF
	}
	return n, nil
}

// opError is the error net.Conn returns for a failed read or write.
func (r *rawIO) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.laddr, Addr: r.raddr, Err: os.NewSyscallError(op, e)}
}

// renameOp gives a RawConn error (a deadline, a closed connection) the operation name
// net.Conn would: "read", not "raw-read".
func renameOp(err error, op string) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
	}
	return err
}
