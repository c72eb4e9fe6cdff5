package ratelimit

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestLimitHierarchy checks that the three levels bind in turn on one call path
// (AllowAll over the API, app and user counters, as the proxy checks them): the app
// limit per app, the user limit across a user's apps, the API limit across users, and
// a special app limit still within its owner's user limit. A refused call spends
// nothing at any level.
func TestLimitHierarchy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAlone(t, Policy{Name: "p", Window: Minute, API: 10, App: 4, User: 6,
			Special: []Special{{App: "vip", Limit: 8}, {User: "carol", Limit: 10}}})
		now := time.Now()
		api := l.Handle("p", DimAPI, "weather/city", true)
		call := func(app, user string) *[3]*Counter {
			return &[3]*Counter{api, l.Handle("p", DimApp, app, false), l.Handle("p", DimUser, user, false)}
		}
		// try makes n calls and returns how many were admitted and the dimension index
		// (0 api, 1 app, 2 user) and Retry-After of the last refusal.
		try := func(cs *[3]*Counter, n int) (admitted, refused int, retry time.Duration) {
			refused = -1
			for range n {
				ok, r, ra := l.AllowAll(cs[:], now)
				if ok {
					admitted++
				} else {
					refused, retry = r, ra
				}
			}
			return
		}
		toEnd := 60 * time.Second // synctest starts at a minute boundary; now is in it
		if got, by, ra := try(call("a1", "alice"), 10); got != 4 || by != 1 || ra != toEnd {
			t.Fatalf("alice/a1: admitted %d, refused by %d after %v; want 4, by the app (1), retry %v", got, by, ra, toEnd)
		}
		if got, by, _ := try(call("a2", "alice"), 10); got != 2 || by != 2 {
			t.Fatalf("alice/a2: admitted %d, refused by %d; want 2, by the user (2)", got, by)
		}
		// carol's special app may make 8 calls and carol (special) 10, but the API has
		// 4 left: the API binds.
		if got, by, _ := try(call("vip", "carol"), 10); got != 4 || by != 0 {
			t.Fatalf("carol/vip: admitted %d, refused by %d; want 4, by the API (0)", got, by)
		}
		if got, by, _ := try(call("b1", "bob"), 3); got != 0 || by != 0 {
			t.Fatalf("bob/b1: admitted %d, refused by %d; want 0, by the API (0)", got, by)
		}
		// Refusals spent nothing: each level holds exactly what was admitted.
		for _, c := range []struct {
			name string
			c    *Counter
			want int64
		}{
			{"api", api, 10},
			{"app a1", l.Handle("p", DimApp, "a1", false), 4},
			{"app a2", l.Handle("p", DimApp, "a2", false), 2},
			{"user alice", l.Handle("p", DimUser, "alice", false), 6},
			{"app vip", l.Handle("p", DimApp, "vip", false), 4},
			{"user carol", l.Handle("p", DimUser, "carol", false), 4},
			{"app b1", l.Handle("p", DimApp, "b1", false), 0},
			{"user bob", l.Handle("p", DimUser, "bob", false), 0},
		} {
			if n := l.Count(c.c, now); n != c.want {
				t.Errorf("%s counts %d, want %d", c.name, n, c.want)
			}
		}
		// In the next window the special app binds at its own limit (8, over the app
		// limit of 4), within its owner's special user limit (10) and the API's.
		time.Sleep(toEnd)
		now = time.Now()
		if got, by, _ := try(call("vip", "carol"), 12); got != 8 || by != 1 {
			t.Fatalf("next window carol/vip: admitted %d, refused by %d; want 8, by the app (1)", got, by)
		}
		// What the API has left (2) is all alice gets, below her app and user limits.
		if got, by, _ := try(call("a1", "alice"), 10); got != 2 || by != 0 {
			t.Fatalf("next window alice/a1: admitted %d, refused by %d; want 2 (API 10 − 8), by the API (0)", got, by)
		}
	})
}
