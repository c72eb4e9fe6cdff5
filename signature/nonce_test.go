package signature

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLocalNonceStore(t *testing.T) {
	s := NewLocalNonceStore(time.Minute, 1000)
	n := []byte("c9f15cbf-f4ac-4a6c-b54d-f51abf4b5b44")
	if !s.Use(n, t0) {
		t.Fatal("first use refused")
	}
	if s.Use(n, t0.Add(59*time.Second)) {
		t.Error("replay within the window accepted")
	}
	if !s.Use([]byte("other"), t0) {
		t.Error("another nonce refused")
	}
	if !s.Use(n, t0.Add(time.Minute)) {
		t.Error("nonce still refused a window later")
	}
	if s.Use(n, t0.Add(time.Minute+time.Second)) {
		t.Error("re-used nonce not remembered again")
	}
}

// TestLocalNonceStoreBounded fills the store far past its capacity: memory stays
// bounded, the most recent nonces are still refused, the overflow is counted.
func TestLocalNonceStoreBounded(t *testing.T) {
	const capacity = 64 * 16
	s := NewLocalNonceStore(time.Hour, capacity)
	for i := 0; i < 10*capacity; i++ {
		if !s.Use([]byte(strconv.Itoa(i)), t0) {
			t.Fatalf("fresh nonce %d refused", i)
		}
	}
	if s.Len() > capacity {
		t.Errorf("holds %d nonces, capacity %d", s.Len(), capacity)
	}
	if s.Evicted() == 0 {
		t.Error("no evictions counted")
	}
	refused := 0
	for i := 10*capacity - 100; i < 10*capacity; i++ {
		if !s.Use([]byte(strconv.Itoa(i)), t0) {
			refused++
		}
	}
	if refused < 90 { // hashing spreads nonces unevenly over shards; most recent stay
		t.Errorf("only %d of the 100 latest nonces still refused", refused)
	}
	// A window later everything has expired and is dropped on use.
	for i := 0; i < 10*capacity; i++ {
		s.Use([]byte("late"+strconv.Itoa(i)), t0.Add(2*time.Hour))
	}
	if s.Len() > capacity {
		t.Errorf("holds %d after expiry", s.Len())
	}
}

// TestLocalNonceStoreConcurrent races many goroutines on the same nonces: each nonce
// is accepted exactly once.
func TestLocalNonceStoreConcurrent(t *testing.T) {
	s := NewLocalNonceStore(time.Minute, 1<<16)
	const nonces, workers = 2000, 8
	var accepted [nonces]atomic.Int32
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < nonces; i++ {
				if s.Use([]byte("n-"+strconv.Itoa(i)), t0) {
					accepted[i].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for i := range accepted {
		if got := accepted[i].Load(); got != 1 {
			t.Fatalf("nonce %d accepted %d times", i, got)
		}
	}
}
