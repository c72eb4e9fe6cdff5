package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestCovered: a deadline request the armed one covers within the slack is skipped; a
// shorter or much later one re-arms (slack included); zero clears once.
func TestCovered(t *testing.T) {
	t0 := time.Now()
	var armed time.Time
	if covered(&armed, t0.Add(time.Second)) {
		t.Fatal("the first deadline was skipped")
	}
	if want := t0.Add(time.Second + deadlineSlack); !armed.Equal(want) {
		t.Fatalf("armed %v, want the deadline plus the slack %v", armed, want)
	}
	if !covered(&armed, t0.Add(time.Second+deadlineSlack/2)) {
		t.Error("a deadline within the slack re-armed")
	}
	if covered(&armed, t0.Add(time.Second+2*deadlineSlack)) {
		t.Error("a deadline past the armed one was skipped: it would fire early")
	}
	if covered(&armed, t0.Add(time.Second)) {
		t.Error("an earlier deadline, more than the slack before the armed one, was skipped: it would fire late")
	}
	if covered(&armed, time.Time{}) || !armed.IsZero() {
		t.Error("clearing the deadline was skipped")
	}
	if !covered(&armed, time.Time{}) {
		t.Error("clearing an already clear deadline re-armed")
	}
}

// TestFastConnDeadlineFires: on a real connection, a read deadline that the wrapper
// skipped re-arming still ends a blocked read, at most the slack late.
func TestFastConnDeadlineFires(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	defer peer.Close()
	c := newFastConn(raw)
	defer c.Close()
	if _, ok := c.(*fastConn); !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", c)
	}
	const timeout = 200 * time.Millisecond
	start := time.Now()
	if err := c.SetReadDeadline(start.Add(timeout)); err != nil {
		t.Fatal(err)
	}
	// Moved by less than the slack: skipped, the armed deadline serves it.
	if err := c.SetReadDeadline(start.Add(timeout + deadlineSlack/4)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read ended with %v, want the deadline", err)
	}
	if took < timeout || took > timeout+deadlineSlack+150*time.Millisecond {
		t.Errorf("the deadline of %v fired after %v", timeout, took)
	}
}
