package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestRawIOIsUsed: on Linux a wrapped TCP connection reads and writes with raw calls.
func TestRawIOIsUsed(t *testing.T) {
	c, _ := tcpPair(t)
	if c.raw == nil {
		t.Fatal("a TCP connection has no raw I/O on Linux")
	}
}

// TestRawIOLargeTransfer sends more than the socket buffers hold both ways, to a
// reader that lags, so writes stop on EAGAIN, wait for the poller and resume where
// they were, and reads wait for data that is not there yet.
func TestRawIOLargeTransfer(t *testing.T) {
	c, peer := tcpPair(t)
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // let the writer fill the buffers and wait
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
		got <- b
	}()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("peer read %d bytes, not the %d written", len(b), len(want))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer did not get the data")
	}

	go func() {
		time.Sleep(20 * time.Millisecond) // the read below waits on the poller first
		peer.Write(want)
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 0, len(want))
	buf := make([]byte, 64<<10)
	for len(b) < len(want) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(b), err)
		}
		b = append(b, buf[:n]...)
	}
	if !bytes.Equal(b, want) {
		t.Fatal("read data differs from what the peer wrote")
	}
}

// TestRawIOErrors: errors read as net.Conn's do: io.EOF when the peer closes, a
// *net.OpError named "read" or "write" around the errno or net.ErrClosed, and a zero
// length call does nothing.
func TestRawIOErrors(t *testing.T) {
	c, peer := tcpPair(t)
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
	peer.Write([]byte("last"))
	peer.(*net.TCPConn).SetLinger(0) // close with a reset: the writes below fail
	peer.Close()
	buf := make([]byte, 16)
	if n, err := c.Read(buf); n != 4 || err != nil || string(buf[:n]) != "last" {
		t.Fatalf("read before close: %d %q, %v", n, buf[:n], err)
	}
	if _, err := c.Read(buf); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the peer closed: %v, want io.EOF or a reset", err)
	}
	var err error
	for i := 0; i < 100 && err == nil; i++ { // the reset may take a write to be seen
		_, err = c.Write([]byte("x"))
	}
	var oe *net.OpError
	var se *os.SyscallError
	if !errors.As(err, &oe) || oe.Op != "write" || !errors.As(err, &se) ||
		!(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("write to a reset connection: %#v, want a write OpError around EPIPE or ECONNRESET", err)
	}

	c.Close()
	_, err = c.Read(buf)
	if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read on a closed connection: %v, want a read OpError around net.ErrClosed", err)
	}
	_, err = c.Write(buf)
	if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write on a closed connection: %v, want a write OpError around net.ErrClosed", err)
	}
}
