package ratelimit

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestCounterIndexFindsWhatTheMapHolds: the lock-free index resolves every counter
// the shards' maps hold, through the growth of each shard's index, and none that a
// sweep deleted.
func TestCounterIndexFindsWhatTheMapHolds(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Minute, User: 10}}); err != nil {
		t.Fatal(err)
	}
	const n = 5000 // about 20 a shard: each index grows from 8 slots twice or more
	cs := make([]*Counter, n)
	for i := range cs {
		cs[i] = l.Handle("p", DimUser, "u"+strconv.Itoa(i), false)
		if cs[i] == nil {
			t.Fatalf("no counter for u%d", i)
		}
	}
	for i, c := range cs {
		if got := l.lookup(keyHash("p", Minute, DimUser, "u"+strconv.Itoa(i), "")); got != c {
			t.Fatalf("lookup of u%d found %p, want %p", i, got, c)
		}
		if again := l.Handle("p", DimUser, "u"+strconv.Itoa(i), false); again != c {
			t.Fatalf("u%d resolved to another counter", i)
		}
	}
	if k := l.keys.Load(); k != n {
		t.Fatalf("%d keys, want %d", k, n)
	}

	// Never counted, these counters have no window: a sweep drops them all.
	l.sweep(time.Now().Add(time.Hour))
	if k := l.keys.Load(); k != 0 {
		t.Fatalf("%d keys after the sweep, want 0", k)
	}
	for i := range cs {
		if got := l.lookup(keyHash("p", Minute, DimUser, "u"+strconv.Itoa(i), "")); got != nil {
			t.Fatalf("lookup of u%d found a swept counter", i)
		}
	}
	if c := l.Handle("p", DimUser, "u7", false); c == nil || c == cs[7] {
		t.Fatal("a handle after the sweep did not make a new counter")
	}
}

// TestCounterIndexUnderConcurrentWrites: lookups race with creates and sweeps that
// replace the index (run under the race detector by make test); every handle names
// the key asked for.
func TestCounterIndexUnderConcurrentWrites(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Minute, User: 10}}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 200 {
			l.sweep(time.Now().Add(time.Hour))
			time.Sleep(100 * time.Microsecond)
		}
	}()
	errs := make(chan string, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20000 {
				subject := "u" + strconv.Itoa((i*7+g)%3000)
				c := l.Handle("p", DimUser, subject, false)
				if c == nil || c.key != keyHash("p", Minute, DimUser, subject, "") {
					errs <- "a handle for " + subject + " named another key"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
