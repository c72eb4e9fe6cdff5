package node

import "testing"

// TestRandomDigits: an app key is n digits, the first not zero, and every digit occurs
// (a skewed or truncated draw would miss some over this many).
func TestRandomDigits(t *testing.T) {
	seen := map[byte]bool{}
	for i := 0; i < 200; i++ {
		d := randomDigits(9)
		if len(d) != 9 || d[0] == '0' {
			t.Fatalf("randomDigits(9) = %q", d)
		}
		for j := 0; j < len(d); j++ {
			if d[j] < '0' || d[j] > '9' {
				t.Fatalf("randomDigits(9) = %q", d)
			}
			seen[d[j]] = true
		}
	}
	if len(seen) != 10 {
		t.Fatalf("digits seen in 1,800 draws: %d of 10", len(seen))
	}
}
