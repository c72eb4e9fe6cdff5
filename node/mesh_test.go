package node

import (
	"bytes"
	"fmt"
	"testing"
)

// TestMeshRingFramesWrapAndFill: frames come out in order and whole across the ring's
// end, a ring with no room drops the frame (as a lost packet), and a consumer that
// frees room lets the producer go on.
func TestMeshRingFramesWrapAndFill(t *testing.T) {
	f, err := newMeshFile(2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	producer, err := mapMesh(f, 2)
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := mapMesh(f, 2) // a second mapping, as the other worker has
	if err != nil {
		t.Fatal(err)
	}
	out, in := &producer.rings[0*2+1], &consumer.rings[0*2+1]
	var buf []byte
	next := 0
	for round := range 40 { // 40 × ~30 frames of up to 1.2 KB: the ring wraps many times
		sent := 0
		for i := range 30 {
			msg := bytes.Repeat([]byte{byte(round + i)}, 1+(round*131+i*17)%1200)
			copy(msg, fmt.Sprintf("%06d", next+sent))
			if !out.put(byte(round), msg) {
				break
			}
			sent++
		}
		if sent == 0 {
			t.Fatalf("round %d: an empty ring took no frame", round)
		}
		got := 0
		buf = in.take(buf, func(ch byte, msg []byte) {
			if ch != byte(round) || string(msg[:min(6, len(msg))]) != fmt.Sprintf("%06d", next+got)[:min(6, len(msg))] {
				t.Fatalf("round %d frame %d: channel %d, starts %q", round, got, ch, msg[:min(6, len(msg))])
			}
			got++
		})
		if got != sent {
			t.Fatalf("round %d: %d frames sent, %d taken", round, sent, got)
		}
		next += sent
	}
	// Full: frames are dropped until the consumer takes some.
	big := make([]byte, 1200)
	n := 0
	for out.put(1, big) {
		n++
	}
	if n < 50 || n > meshRingSize/1200 {
		t.Fatalf("a 64 KiB ring took %d frames of 1200 bytes", n)
	}
	in.take(buf, func(byte, []byte) {})
	if !out.put(1, big) {
		t.Fatal("a drained ring refused a frame")
	}
	if out.put(1, make([]byte, meshRingSize)) {
		t.Fatal("a frame larger than the ring was taken")
	}
}
