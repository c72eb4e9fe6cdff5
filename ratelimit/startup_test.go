package ratelimit

import (
	"testing"
	"time"
)

// TestNoRefusalsFarFromTheLimitAtStartup: a node far from its limit decides alone,
// from its very first calls. (A zero "peer starved at" tick once made the limiter hand
// back the budgets it took in its first flushes and refuse ~40% of calls for seconds.)
func TestNoRefusalsFarFromTheLimitAtStartup(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Hour, API: 1_000_000_000, App: 1_000_000_000}}); err != nil {
		t.Fatal(err)
	}
	l.Start()
	defer l.Close()
	deadline := time.Now().Add(200 * time.Millisecond) // many flushes
	calls, refused := 0, 0
	for time.Now().Before(deadline) && calls < 2_000_000 {
		c := l.HandleScoped("p", DimApp, "mobile", "weather/city", false)
		if ok, _ := l.Allow(c, time.Now()); !ok {
			refused++
		}
		calls++
	}
	if refused > 0 {
		t.Fatalf("refused %d of %d calls with a limit of 10⁹", refused, calls)
	}
}
