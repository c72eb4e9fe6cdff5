package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestLazyDeadline: setting a deadline moves the timer only when the armed one would
// fire more than the slack after it; a timer that fires before the deadline asked for
// re-arms, one that fires after it is a timeout; clearing never moves the timer, and a
// stale timer is cleared when it fires.
func TestLazyDeadline(t *testing.T) {
	t0 := time.Now()
	var d lazyDeadline
	arm, move := d.set(t0.Add(time.Second))
	if !move || !arm.Equal(t0.Add(time.Second+deadlineSlack)) {
		t.Fatalf("first deadline: move %v to %v, want the deadline plus the slack", move, arm)
	}
	if _, move := d.set(t0.Add(time.Second + deadlineSlack/2)); move {
		t.Error("a deadline the armed timer serves within the slack moved it")
	}
	if _, move := d.set(t0.Add(5 * time.Second)); move {
		t.Error("a later deadline moved the timer; the early timer should re-arm when it fires")
	}
	if _, move := d.set(t0.Add(time.Second / 2)); !move {
		t.Error("an earlier deadline, more than the slack before the armed timer, did not move it: it would fire late")
	}
	d.set(t0.Add(3 * time.Second))
	// The timer (armed for 0.5 s) fires at 0.55 s, before the 3 s asked for: retry.
	arm, retry := d.fired(t0.Add(550 * time.Millisecond))
	if !retry || !arm.Equal(t0.Add(3*time.Second+deadlineSlack)) {
		t.Fatalf("an early fire: retry %v, re-arm %v; want a retry re-armed at the deadline plus the slack", retry, arm)
	}
	if _, retry := d.fired(t0.Add(3*time.Second + deadlineSlack)); retry {
		t.Error("a fire past the deadline asked for was retried")
	}
	if _, move := d.set(time.Time{}); move {
		t.Error("clearing moved the timer")
	}
	arm, retry = d.fired(t0.Add(4 * time.Second))
	if !retry || !arm.IsZero() {
		t.Errorf("a stale timer after clearing: retry %v, re-arm %v; want a retry with no deadline", retry, arm)
	}
}

// tcpPair returns a wrapped client end and the raw server end of a loopback TCP
// connection, closed at cleanup.
func tcpPair(t *testing.T) (*fastConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	c, ok := newFastConn(raw).(*fastConn)
	if !ok {
		t.Fatalf("a TCP connection was not wrapped")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// TestFastConnReadDeadline: a read deadline whose timer was not moved still ends a
// blocked read, never early and at most the slack late; a deadline pushed later lets
// a read outlive the earlier timer and get its data.
func TestFastConnReadDeadline(t *testing.T) {
	c, peer := tcpPair(t)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(timeout)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(start.Add(timeout + deadlineSlack/4)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read ended with %v, want the deadline", err)
	}
	if took < timeout+deadlineSlack/4 || took > timeout+deadlineSlack+150*time.Millisecond {
		t.Errorf("the deadline of %v fired after %v", timeout+deadlineSlack/4, took)
	}

	// The timer is armed for 100 ms; the deadline then moves to 2 s without moving it.
	start = time.Now()
	if err := c.SetReadDeadline(start.Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(start.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(400 * time.Millisecond)
		_, _ = peer.Write([]byte("x"))
	}()
	b := make([]byte, 1)
	n, err := c.Read(b)
	if err != nil || n != 1 || b[0] != 'x' {
		t.Fatalf("read across an early timer: %d %q %v, want the byte the peer sent at 400 ms", n, b[:n], err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("read returned after %v, before the peer wrote", took)
	}

	// Cleared: the stale timer is cleared when it fires, and the read waits on.
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = peer.Write([]byte("y"))
	}()
	if n, err := c.Read(b); err != nil || n != 1 || b[0] != 'y' {
		t.Fatalf("read with the deadline cleared: %d %v, want the byte the peer sent", n, err)
	}
}

// TestFastConnWriteDeadline: a write blocked on a peer that does not read outlives an
// early timer and ends at the deadline asked for, reporting what it wrote; a peer
// that then reads everything gets every byte in order.
func TestFastConnWriteDeadline(t *testing.T) {
	c, peer := tcpPair(t)
	payload := make([]byte, 64<<20) // far more than the socket buffers hold
	for i := range payload {
		payload[i] = byte(i)
	}
	start := time.Now()
	if err := c.SetWriteDeadline(start.Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	const deadline = 400 * time.Millisecond
	if err := c.SetWriteDeadline(start.Add(deadline)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Write(payload)
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write ended with %v after %d bytes, want the deadline", err, n)
	}
	if took < deadline || took > deadline+deadlineSlack+150*time.Millisecond {
		t.Errorf("the write deadline of %v fired after %v", deadline, took)
	}
	if n <= 0 || n >= len(payload) {
		t.Fatalf("wrote %d bytes, want part of the payload", n)
	}
	c.Conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(bufio.NewReader(peer))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("the peer read %d bytes, the write reported %d", len(got), n)
	}
	for i := range got {
		if got[i] != byte(i) {
			t.Fatalf("byte %d is %d, want %d", i, got[i], byte(i))
		}
	}
}

// TestClientIdleTimeout: through the real server, a keep-alive client connection
// left idle is closed at the idle timeout, not before (the timer armed for the read
// timeout fires first and re-arms) and at most the slack after.
func TestClientIdleTimeout(t *testing.T) {
	const idle = 600 * time.Millisecond
	g := startProxy(t, Config{ReadTimeout: 200 * time.Millisecond, IdleTimeout: idle}, nil)
	conn, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var resp fasthttp.Response
	if err := resp.Read(br); err != nil {
		t.Fatalf("first response: %v", err)
	}
	sent := time.Now()
	if err := conn.SetReadDeadline(sent.Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err = br.ReadByte()
	took := time.Since(sent)
	if err != io.EOF {
		t.Fatalf("idle connection: read %v, want the server to close it", err)
	}
	if took < idle-20*time.Millisecond || took > idle+deadlineSlack+300*time.Millisecond {
		t.Errorf("the idle connection was closed after %v, want %v (at most the slack later)", took, idle)
	}
}
