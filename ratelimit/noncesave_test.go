package ratelimit

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestNonceSaveAndLoad: the live nonces a store saves are refused by the store that
// loads them, until their own expiry; expired ones are not saved; a damaged file loads
// nothing.
func TestNonceSaveAndLoad(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	before, err := NewNonceStore(NonceConfig{MaxEntries: 10_000, TTL: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	nonce := func(i int) []byte { return fmt.Appendf(nil, "saved-%d", i) }
	for i := range 1000 {
		// Half used two minutes ago: expired by now (TTL one minute).
		at := now
		if i%2 == 1 {
			at = now.Add(-2 * time.Minute)
		}
		if !before.Use(nonce(i), at) {
			t.Fatalf("nonce %d refused on first use", i)
		}
	}
	var file bytes.Buffer
	saved, err := before.SaveTo(&file)
	if err != nil || saved != 500 {
		t.Fatalf("saved %d (%v), want the 500 live ones", saved, err)
	}

	now = now.Add(30 * time.Second) // the restart
	after, err := NewNonceStore(NonceConfig{MaxEntries: 10_000, TTL: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := after.LoadFrom(bytes.NewReader(file.Bytes()))
	if err != nil || loaded != 500 {
		t.Fatalf("loaded %d (%v), want 500", loaded, err)
	}
	for i := range 1000 {
		fresh := after.Use(nonce(i), now)
		if used := i%2 == 0; fresh == used {
			t.Fatalf("nonce %d after the restart: fresh %v", i, fresh)
		}
	}
	// A loaded nonce expires when it would have, not a TTL after the load.
	if !after.Use(nonce(0), now.Add(31*time.Second)) {
		t.Fatal("a loaded nonce outlived its expiry")
	}

	for name, damaged := range map[string][]byte{
		"truncated":  file.Bytes()[:file.Len()-7],
		"bit flip":   append(append([]byte(nil), file.Bytes()[:30]...), append([]byte{file.Bytes()[30] ^ 1}, file.Bytes()[31:]...)...),
		"not ours":   []byte("hello, world"),
		"empty file": nil,
	} {
		s, _ := NewNonceStore(NonceConfig{MaxEntries: 10_000, TTL: time.Minute, Clock: clock})
		if n, err := s.LoadFrom(bytes.NewReader(damaged)); err == nil || n != 0 || s.Len() != 0 {
			t.Errorf("%s: loaded %d, err %v; want nothing and an error", name, n, err)
		} else if !strings.Contains(err.Error(), "nonce table") {
			t.Errorf("%s: error %q does not say what it read", name, err)
		}
	}
}
