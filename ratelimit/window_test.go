package ratelimit

import (
	"testing"
	"testing/synctest"
	"time"
)

// In a synctest bubble the clock starts at 2000-01-01 00:00:00 UTC and only moves when
// every goroutine is blocked, so window boundaries can be hit exactly.

func newAlone(t *testing.T, ps ...Policy) *Limiter {
	t.Helper()
	// Alone, a node's budget is the whole remainder, so flushes only expire keys: a
	// long interval keeps day-long fake sleeps cheap.
	l, err := New(Config{FlushInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicies(ps); err != nil {
		t.Fatal(err)
	}
	l.Start()
	t.Cleanup(l.Close)
	return l
}

// admitN calls Allow n times at now and returns how many were admitted.
func admitN(l *Limiter, c *Counter, n int, now time.Time) int {
	got := 0
	for range n {
		if ok, _ := l.Allow(c, now); ok {
			got++
		}
	}
	return got
}

func TestWindowBoundaries(t *testing.T) {
	cases := []struct {
		w    Window
		to   time.Time // an instant just before a boundary
		next time.Time // the boundary
	}{
		{Minute, time.Date(2000, 1, 1, 0, 0, 59, 999e6, time.UTC), time.Date(2000, 1, 1, 0, 1, 0, 0, time.UTC)},
		{Hour, time.Date(2000, 1, 1, 0, 59, 59, 999e6, time.UTC), time.Date(2000, 1, 1, 1, 0, 0, 0, time.UTC)},
		{Day, time.Date(2000, 1, 1, 23, 59, 59, 999e6, time.UTC), time.Date(2000, 1, 2, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		t.Run(c.w.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newAlone(t, Policy{Name: "p", Window: c.w, API: 3})
				h := l.Handle("p", DimAPI, "weather/city", true)
				// Spend the quota a little after the start of the window...
				time.Sleep(10 * time.Millisecond)
				if got := admitN(l, h, 5, time.Now()); got != 3 {
					t.Fatalf("admitted %d of 5 at the window start, want 3", got)
				}
				// ...it stays spent up to the last instant of the window,
				time.Sleep(c.to.Sub(time.Now()))
				now := time.Now()
				ok, retry := l.Allow(h, now)
				if ok {
					t.Fatalf("admitted at %v with the quota spent", now)
				}
				if retry != c.next.Sub(now) {
					t.Errorf("Retry-After = %v, want %v (to the window's end)", retry, c.next.Sub(now))
				}
				// and is whole again at the boundary, which is UTC-aligned.
				time.Sleep(c.next.Sub(now))
				if got := admitN(l, h, 5, time.Now()); got != 3 {
					t.Fatalf("admitted %d at %v, want a fresh quota of 3", got, time.Now())
				}
				if s, e := c.w.Bounds(time.Now()); !s.Equal(c.next) || e.Sub(s) != time.Duration(c.w.Seconds())*time.Second {
					t.Errorf("Bounds = %v..%v", s, e)
				}
			})
		})
	}
}

func TestWindowMidnightUTCInOtherZone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAlone(t, Policy{Name: "p", Window: Day, User: 2})
		h := l.Handle("p", DimUser, "alice", false)
		// 23:30 in UTC-05:00 is 04:30 UTC the next day: windows follow UTC, not the zone.
		ny := time.FixedZone("EST", -5*3600)
		at := time.Date(2000, 1, 1, 18, 59, 0, 0, ny) // 23:59 UTC
		if got := admitN(l, h, 3, at); got != 2 {
			t.Fatalf("admitted %d, want 2", got)
		}
		if got := admitN(l, h, 3, at.Add(time.Minute)); got != 2 { // 00:00 UTC, 19:00 EST
			t.Fatalf("after UTC midnight admitted %d, want 2", got)
		}
	})
}

func TestSpecialsAndDimensions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAlone(t, Policy{Name: "basic", Window: Minute, API: 50, App: 3, User: 5,
			Special: []Special{{App: "mobile", Limit: 7}, {User: "bob", Limit: 1}}})
		now := time.Now()
		cases := []struct {
			dim     Dimension
			subject string
			want    int
		}{
			{DimApp, "web", 3},
			{DimApp, "mobile", 7}, // special app
			{DimUser, "alice", 5},
			{DimUser, "bob", 1}, // special user
			{DimAPI, "weather/city", 50},
		}
		for _, c := range cases {
			h := l.Handle("basic", c.dim, c.subject, false)
			if got := admitN(l, h, 60, now); got != c.want {
				t.Errorf("%v %s admitted %d, want %d", c.dim, c.subject, got, c.want)
			}
		}
		// Keys are separate: another app has its own quota.
		if got := admitN(l, l.Handle("basic", DimApp, "tv", false), 10, now); got != 3 {
			t.Errorf("second app admitted %d, want 3", got)
		}
		// Unknown policy or unlimited dimension: no counter, always admitted.
		if l.Handle("nope", DimAPI, "x", false) != nil {
			t.Error("unknown policy gave a counter")
		}
		if ok, _ := l.Allow(nil, now); !ok {
			t.Error("nil counter refused")
		}
	})
}

func TestAllowAllRefusesWithoutSpending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAlone(t, Policy{Name: "p", Window: Hour, API: 10, App: 2, User: 10})
		now := time.Now()
		api := l.Handle("p", DimAPI, "api1", true)
		app := l.Handle("p", DimApp, "web", false)
		user := l.Handle("p", DimUser, "alice", false)
		cs := [3]*Counter{api, app, user}
		for i := range 2 {
			if ok, _, _ := l.AllowAll(cs[:], now); !ok {
				t.Fatalf("call %d refused", i)
			}
		}
		ok, refused, retry := l.AllowAll(cs[:], now)
		if ok || refused != 1 || retry != time.Hour {
			t.Fatalf("third call: ok=%v refused=%d retry=%v, want refused by the app (1) for 1h", ok, refused, retry)
		}
		// The refusal did not spend the API or user quota.
		if n := l.Count(api, now); n != 2 {
			t.Errorf("api count %d, want 2", n)
		}
		// Another app still gets the API's remaining 8.
		other := [3]*Counter{api, l.Handle("p", DimApp, "tv", false), user}
		got := 0
		for range 20 {
			if ok, _, _ := l.AllowAll(other[:], now); ok {
				got++
			}
		}
		if got != 2 { // the app limit (2) binds first
			t.Errorf("second app admitted %d, want 2", got)
		}
	})
}

func TestKeysExpireWithTheirWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAlone(t, Policy{Name: "p", Window: Minute, App: 5})
		for _, app := range []string{"a", "b", "c"} {
			l.Allow(l.Handle("p", DimApp, app, false), time.Now())
		}
		pinned := l.Handle("p", DimApp, "route", true)
		l.Allow(pinned, time.Now())
		if l.Keys() != 4 {
			t.Fatalf("keys = %d, want 4", l.Keys())
		}
		time.Sleep(90 * time.Second) // next window: still kept (the previous one may matter)
		if l.Keys() != 4 {
			t.Fatalf("keys after one window = %d, want 4", l.Keys())
		}
		time.Sleep(60 * time.Second) // idle for a whole window: dropped, unless pinned
		if l.Keys() != 1 {
			t.Fatalf("keys after two windows = %d, want 1 (the pinned one)", l.Keys())
		}
	})
}
