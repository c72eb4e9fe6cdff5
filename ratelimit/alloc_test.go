//go:build !race

package ratelimit

import (
	"testing"
	"time"
)

// The hot path must not allocate: a quota check for a compiled handle, the lookup of
// a request-time key, and the three-counter check the proxy makes.
func TestHotPathAllocatesNothing(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Day, API: 1 << 40, App: 1 << 40, User: 1 << 40}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	api := l.Handle("p", DimAPI, "weather/city", true)
	app := l.Handle("p", DimApp, "mobile", false)
	user := l.Handle("p", DimUser, "alice", false)
	l.Allow(api, now) // the first call of a window allocates its slot
	l.Allow(app, now)
	l.Allow(user, now)
	subject := "mobile"
	cs := [3]*Counter{api, app, user}
	for name, f := range map[string]func(){
		"Allow":    func() { l.Allow(api, now) },
		"Handle":   func() { _ = l.Handle("p", DimApp, subject, false) },
		"AllowAll": func() { l.AllowAll(cs[:], now) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v per call", name, n)
		}
	}
}

// A nonce's use does not allocate, in a table of the process's own or in a shared
// file (a lone store queues nothing; a refused nonce is the steady state here).
func TestNonceUseAllocatesNothing(t *testing.T) {
	for name, cfg := range map[string]NonceConfig{
		"own":    {MaxEntries: 10_000},
		"shared": {MaxEntries: 10_000, SharedFile: t.TempDir() + "/nonces"},
	} {
		s, err := NewNonceStore(cfg)
		if err != nil {
			t.Fatal(err)
		}
		nonce := []byte("5e1d1c1e-alloc")
		now := time.Now()
		s.Use(nonce, now)
		if n := testing.AllocsPerRun(1000, func() { s.Use(nonce, now) }); n != 0 {
			t.Errorf("%s: Use allocates %v per call", name, n)
		}
		s.Close()
	}
}
