package main

import (
	"net"
	"testing"
)

// TestRetryPortTaken: a start that failed on a port in use (here a real bind on a
// port a listener holds) is tried again after a reset, up to the bound; any other
// failure ends it at once.
func TestRetryPortTaken(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	taken := held.Addr().String()
	var tries, resets int
	bindTaken := func() (net.Listener, error) { tries++; return net.Listen("tcp", taken) }
	if _, err := retryPortTaken(t.Context(), 3, bindTaken, func() { resets++ }); err == nil || tries != 3 || resets != 2 {
		t.Fatalf("port held throughout: err %v after %d tries, %d resets; want an error after 3 tries, 2 resets", err, tries, resets)
	}

	tries, resets = 0, 0
	addr := taken
	bindFresh := func() (net.Listener, error) { tries++; return net.Listen("tcp", addr) }
	l, err := retryPortTaken(t.Context(), 3, bindFresh, func() { resets++; addr = "127.0.0.1:0" })
	if err != nil || tries != 2 || resets != 1 {
		t.Fatalf("port free on the second try: err %v after %d tries; want success on the second", err, tries)
	}
	l.Close()

	tries = 0
	other := func() (net.Listener, error) { tries++; return net.Listen("tcp", "256.0.0.1:0") }
	if _, err := retryPortTaken(t.Context(), 3, other, func() {}); err == nil || tries != 1 {
		t.Fatalf("another failure: err %v after %d tries; want one try", err, tries)
	}
}
