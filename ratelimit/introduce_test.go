package ratelimit

import (
	"testing"
	"time"
)

// TestIntroductionsBackOff: a member that stays silent is introduced to after the
// grace, then at gaps of 1, 2, 4 ... s up to maxIntroGap; once heard from, a new
// silence starts over.
func TestIntroductionsBackOff(t *testing.T) {
	in := introductions{}
	t0 := time.Unix(1_000_000, 0)
	var got []time.Duration
	for ms := 0; ms <= 200_000; ms += 100 {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		if in.due("b", now, silentAfter) {
			got = append(got, now.Sub(t0))
		}
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 62, 92, 122, 152, 182}
	if len(got) != len(want) {
		t.Fatalf("introductions at %v; want at %v s", got, want)
	}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("introductions at %v; want at %v s", got, want)
		}
	}
	in.heard("b")
	now := t0.Add(300 * time.Second)
	if !in.due("b", now, 0) || in.due("b", now.Add(999*time.Millisecond), 0) || !in.due("b", now.Add(time.Second), 0) {
		t.Fatal("after being heard from, a new silence does not start over with a 1 s gap")
	}
	in.due("gone", now, 0)
	in.keepOnly([]string{"b"})
	if _, ok := in["gone"]; ok || len(in) != 1 {
		t.Fatalf("keepOnly left %v", in)
	}
}
