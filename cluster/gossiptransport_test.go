package cluster

import (
	"bytes"
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"
)

func newTestTransport(t *testing.T) *gossipTransport {
	t.Helper()
	tr, err := newGossipTransport("127.0.0.1", 0, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown() })
	return tr
}

func addrOf(tr *gossipTransport) string { return "127.0.0.1:" + strconv.Itoa(tr.port()) }

// TestGossipTransportPackets sends packets both ways and checks each arrives whole, in
// a buffer of its own that the next packet does not overwrite.
func TestGossipTransportPackets(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	first, second := bytes.Repeat([]byte{1}, 1200), []byte("second")
	for _, p := range [][]byte{first, second} {
		if _, err := a.WriteTo(p, addrOf(b)); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]byte
	for range 2 {
		select {
		case p := <-b.PacketCh():
			if p.From.String() != addrOf(a) || p.Timestamp.IsZero() {
				t.Errorf("packet from %v at %v, want from %s with a time", p.From, p.Timestamp, addrOf(a))
			}
			if cap(p.Buf) != len(p.Buf) {
				t.Errorf("a %d-byte packet holds a %d-byte buffer", len(p.Buf), cap(p.Buf))
			}
			got = append(got, p.Buf)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 2 packets in 5 s", len(got))
		}
	}
	if !bytes.Equal(got[0], first) || !bytes.Equal(got[1], second) {
		t.Errorf("got %d and %q bytes, want the 1200-byte packet then %q", len(got[0]), got[1], second)
	}
}

// TestGossipTransportStreams dials a stream and reads what the other side wrote.
func TestGossipTransportStreams(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	c, err := a.DialTimeout(addrOf(b), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("push-pull")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-b.StreamCh():
		defer s.Close()
		buf := make([]byte, 9)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "push-pull" {
			t.Errorf("read %q, %v", buf, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no stream in 5 s")
	}
}

// TestGossipTransportDropFilter checks that a cut link loses packets and refuses
// streams, and that clearing the filter heals it.
func TestGossipTransportDropFilter(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	a.drop.set(func(addr string) bool { return addr == addrOf(b) })
	if _, err := a.WriteTo([]byte("lost"), addrOf(b)); err != nil {
		t.Errorf("a dropped packet reported %v, want a silent loss", err)
	}
	if _, err := a.DialTimeout(addrOf(b), time.Second); err != errDropped {
		t.Errorf("dial over a cut link: %v, want errDropped", err)
	}
	select {
	case p := <-b.PacketCh():
		t.Fatalf("a dropped packet arrived: %q", p.Buf)
	case <-time.After(200 * time.Millisecond):
	}
	a.drop.set(nil)
	if _, err := a.WriteTo([]byte("healed"), addrOf(b)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.PacketCh():
		if string(p.Buf) != "healed" {
			t.Errorf("got %q after healing", p.Buf)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no packet in 5 s after healing")
	}
}

// TestGossipTransportShutdownUnread checks that Shutdown returns while a packet waits
// for a reader that is gone, and twice.
func TestGossipTransportShutdownUnread(t *testing.T) {
	a, b := newTestTransport(t), newTestTransport(t)
	if _, err := a.WriteTo([]byte("nobody reads this"), addrOf(b)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the reader is now blocked handing it on
	done := make(chan struct{})
	go func() {
		b.Shutdown()
		b.Shutdown()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown blocked on an unread packet")
	}
	if _, err := net.DialTimeout("tcp", addrOf(b), time.Second); err == nil {
		t.Error("the stream listener still accepts after Shutdown")
	}
}

// TestGossipTransportAdvertise checks the advertised address: the one given, else the
// bound one.
func TestGossipTransportAdvertise(t *testing.T) {
	tr := newTestTransport(t)
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) || port != tr.port() {
		t.Errorf("bound: %v:%d, %v; want 127.0.0.1:%d", ip, port, err, tr.port())
	}
	ip, port, err = tr.FinalAdvertiseAddr("10.1.2.3", 7946)
	if err != nil || ip.String() != "10.1.2.3" || len(ip) != net.IPv4len || port != 7946 {
		t.Errorf("given: %v (%d bytes):%d, %v; want 10.1.2.3:7946 in 4 bytes", ip, len(ip), port, err)
	}
	if _, _, err := tr.FinalAdvertiseAddr("not-an-ip", 1); err == nil {
		t.Error("an advertise address that is not an IP was taken")
	}
}
