package ratelimit

import (
	"testing"
	"time"
)

// waitFor polls cond every millisecond for at most d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestLimiterLoopSleepsWhenIdleAndWakesOnUse: a node alone with nothing to flush lets
// its loop sleep; a call wakes it at once (the counter it marked is flushed well
// before the idle interval), it goes back to sleep, and the limit still holds exactly.
func TestLimiterLoopSleepsWhenIdleAndWakesOnUse(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Hour, API: 1000}}); err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Close()
	if !waitFor(2*time.Second, l.pace.idle.Load) {
		t.Fatal("the loop of an idle, lone limiter never went to sleep")
	}
	c := l.HandleScoped("p", DimAPI, "weather", "", false)
	if ok, _ := l.Allow(c, time.Now()); !ok {
		t.Fatal("the first call was refused")
	}
	if !waitFor(idleFlush/2, func() bool { return l.dirty.Load() == nil }) {
		t.Fatalf("the counter the call marked was not flushed within %v: the loop did not wake", idleFlush/2)
	}
	if !waitFor(2*time.Second, l.pace.idle.Load) {
		t.Fatal("the loop did not go back to sleep")
	}
	admitted := 1
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && admitted < 1000; {
		if ok, _ := l.Allow(c, time.Now()); ok {
			admitted++
		}
	}
	if admitted != 1000 {
		t.Fatalf("admitted %d of a limit of 1000 in 2 s", admitted)
	}
	if ok, _ := l.Allow(c, time.Now()); ok {
		t.Error("a call over the limit was admitted")
	}
}

// TestNonceLoopSleepsWhenIdleAndWakesOnUse: with nothing pending the nonce store's
// loop sleeps; once a peer has shown itself, a used nonce wakes it, and it flushes and
// goes back to sleep.
func TestNonceLoopSleepsWhenIdleAndWakesOnUse(t *testing.T) {
	s, err := NewNonceStore(NonceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	if !waitFor(2*time.Second, s.pace.idle.Load) {
		t.Fatal("the loop of an idle store never went to sleep")
	}
	s.sawPeer() // as a joining node's state exchange does
	if !s.Use([]byte("n-1"), time.Now()) {
		t.Fatal("a fresh nonce was refused")
	}
	// The wake-up ends the sleep: dirty is cleared by the flush it triggers well
	// before the idle interval would have passed.
	if !waitFor(idleFlush/2, func() bool { return !s.dirty.Load() }) {
		t.Fatalf("the used nonce was not flushed within %v of waking the loop", idleFlush/2)
	}
	if !waitFor(2*time.Second, s.pace.idle.Load) {
		t.Fatal("the loop did not go back to sleep")
	}
	if s.Use([]byte("n-1"), time.Now()) {
		t.Fatal("a used nonce was accepted again")
	}
}

// TestLoneNonceStoreQueuesNothing: a store no other node can hear from queues no used
// nonce and marks no work for its flush loop; it still refuses replays. The loop is
// not started, so nothing drains the queue behind the test's back: a flush is run by
// hand, as the loop would, to show the decision holds across flushes.
func TestLoneNonceStoreQueuesNothing(t *testing.T) {
	s, err := NewNonceStore(NonceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for round := range 2 {
		for i := range 1000 {
			if !s.Use([]byte{byte(i), byte(i >> 8), byte(round)}, time.Now()) {
				t.Fatalf("fresh nonce %d refused", i)
			}
		}
		if s.dirty.Load() {
			t.Fatalf("round %d: uses on a lone store marked work for the flush loop", round)
		}
		for i := range s.shards {
			if n := len(s.shards[i].pending); n != 0 {
				t.Fatalf("round %d: shard %d queued %d bytes of digests with no one to send them to", round, i, n)
			}
		}
		s.flush()
	}
	if s.Use([]byte{7, 0, 0}, time.Now()) {
		t.Error("a used nonce was accepted again")
	}
}
