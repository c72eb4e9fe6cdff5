package ratelimit

import (
	"sync/atomic"
	"time"
)

// idleFlush is how often a sleeping flush loop still flushes: membership (a peer that
// joined), expiry, metrics and resends of dropped packets keep going, slowly.
const idleFlush = 100 * time.Millisecond

// flushLoop paces the limiter's and the nonce store's flushes. It flushes every
// interval while a flush reports work, and sleeps while it does not, until poked or
// idleFlush passes: an idle node does not wake a thousand times a second.
//
// The hot path marks its work (pending) and then pokes; the loop stores idle and
// then checks pending. One of them sees the other's store, so work marked while the
// loop goes to sleep never waits for idleFlush.
type flushLoop struct {
	idle atomic.Bool
	wake chan struct{}
}

func newFlushLoop() flushLoop { return flushLoop{wake: make(chan struct{}, 1)} }

// poke wakes the loop if it sleeps. Cheap when repeated: a load of a flag that
// changes once per sleep.
func (f *flushLoop) poke() {
	if f.idle.Load() {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// run flushes until stop is closed, then flushes once more. flush reports whether the
// next flush may have work; pending whether work was marked since the last flush.
func (f *flushLoop) run(interval time.Duration, stop <-chan struct{}, flush, pending func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	idle := time.NewTimer(idleFlush)
	idle.Stop()
	woken := false
	for {
		if !woken {
			select {
			case <-stop:
				flush()
				return
			case <-t.C:
			}
		}
		woken = false
		if flush() {
			continue
		}
		f.idle.Store(true)
		if !pending() {
			t.Stop()
			idle.Reset(idleFlush)
			select {
			case <-stop:
				f.idle.Store(false)
				flush()
				return
			case <-f.wake:
				// Flush at once: what woke the loop is waited for (a peer waits
				// for our acknowledgement, a nonce for its way to the others).
				woken = true
			case <-idle.C:
			}
			idle.Stop()
			t.Reset(interval)
		}
		f.idle.Store(false)
	}
}
