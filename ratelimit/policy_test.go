package ratelimit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPolicyValidate(t *testing.T) {
	ok := Policy{Name: "basic", Window: Minute, API: 1000, App: 100, User: 500,
		Special: []Special{{App: "mobile", Limit: 500}, {User: "bob", Limit: 5}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid policy refused: %v", err)
	}
	cases := []struct {
		name string
		edit func(p *Policy)
		want string
	}{
		{"no name", func(p *Policy) { p.Name = "" }, "name is required"},
		{"bad window", func(p *Policy) { p.Window = 0 }, "window"},
		{"negative", func(p *Policy) { p.App = -1 }, "negative"},
		{"nothing limited", func(p *Policy) { *p = Policy{Name: "x", Window: Hour} }, "at least one"},
		{"app over user", func(p *Policy) { p.App = 600 }, "app limit 600 exceeds user limit 500"},
		{"user over api", func(p *Policy) { p.User = 2000 }, "user limit 2000 exceeds api limit 1000"},
		{"app over api without user", func(p *Policy) { p.User = 0; p.App = 1001 }, "app limit 1001 exceeds api limit 1000"},
		{"special over api", func(p *Policy) { p.Special[0].Limit = 1001 }, "special[0]: limit 1001 exceeds api limit 1000"},
		{"special both", func(p *Policy) { p.Special[1].App = "a" }, "exactly one"},
		{"special neither", func(p *Policy) { p.Special[1].User = "" }, "exactly one"},
		{"special zero", func(p *Policy) { p.Special[1].Limit = 0 }, "positive"},
		{"special twice", func(p *Policy) { p.Special = append(p.Special, Special{User: "bob", Limit: 1}) }, "listed twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := ok
			p.Special = append([]Special(nil), ok.Special...)
			c.edit(&p)
			err := p.Validate()
			if err == nil || !errors.Is(err, ErrInvalidPolicy) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate = %v, want an ErrInvalidPolicy containing %q", err, c.want)
			}
		})
	}
	// Unset levels are not compared: an app limit alone is fine.
	if err := (&Policy{Name: "a", Window: Day, App: 10}).Validate(); err != nil {
		t.Errorf("app-only policy: %v", err)
	}
}

func TestParseWindow(t *testing.T) {
	for s, w := range map[string]Window{"minute": Minute, "Hour": Hour, " DAY ": Day} {
		if got, err := ParseWindow(s); err != nil || got != w {
			t.Errorf("ParseWindow(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseWindow("week"); err == nil {
		t.Error("week accepted")
	}
}

func TestSetPoliciesAllOrNothing(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.SetPolicies([]Policy{{Name: "a", Window: Minute, API: 5}}); err != nil {
		t.Fatal(err)
	}
	err = l.SetPolicies([]Policy{{Name: "b", Window: Minute, API: 5}, {Name: "c", Window: Minute, API: 5, User: 9}})
	if err == nil {
		t.Fatal("an invalid set was accepted")
	}
	if l.Handle("a", DimAPI, "x", false) == nil || l.Handle("b", DimAPI, "x", false) != nil {
		t.Error("a failed SetPolicies changed the policy set")
	}
}

func TestHandleScopedCountsEachScopeApart(t *testing.T) {
	l, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.SetPolicies([]Policy{{Name: "p", Window: Minute, App: 2, Special: []Special{{App: "vip", Limit: 3}}}}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	a := l.HandleScoped("p", DimApp, "mobile", "weather/city", false)
	b := l.HandleScoped("p", DimApp, "mobile", "weather/ping", false)
	if a == b || a == nil || b == nil {
		t.Fatal("two scopes share a counter")
	}
	if again := l.HandleScoped("p", DimApp, "mobile", "weather/city", false); again != a {
		t.Fatal("the same subject and scope resolved to another counter")
	}
	for i := 0; i < 2; i++ {
		if ok, _ := l.Allow(a, now); !ok {
			t.Fatalf("call %d refused", i)
		}
	}
	if ok, _ := l.Allow(a, now); ok {
		t.Fatal("third call admitted over an app limit of 2")
	}
	if ok, _ := l.Allow(b, now); !ok {
		t.Fatal("the other scope was charged")
	}
	vip := l.HandleScoped("p", DimApp, "vip", "weather/city", false)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow(vip, now); !ok {
			t.Fatalf("special app refused at call %d", i)
		}
	}
	if ok, _ := l.Allow(vip, now); ok {
		t.Fatal("special app admitted over its limit of 3")
	}
}
