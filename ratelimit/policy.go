package ratelimit

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Window is the length of a fixed quota window. Windows are aligned to UTC: a minute
// window starts at second 0, an hour window at minute 0, a day window at 00:00 UTC.
type Window uint8

// The windows a policy can use.
const (
	Minute Window = iota + 1
	Hour
	Day
)

// Seconds returns the window's length in seconds.
func (w Window) Seconds() int64 {
	switch w {
	case Minute:
		return 60
	case Hour:
		return 3600
	case Day:
		return 86400
	}
	return 0
}

func (w Window) String() string {
	switch w {
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	case Day:
		return "day"
	}
	return fmt.Sprintf("Window(%d)", uint8(w))
}

// Valid reports whether w is Minute, Hour or Day.
func (w Window) Valid() bool { return w >= Minute && w <= Day }

// ParseWindow reads "minute", "hour" or "day" (any case), as the policy file writes it.
func ParseWindow(s string) (Window, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "minute":
		return Minute, nil
	case "hour":
		return Hour, nil
	case "day":
		return Day, nil
	}
	return 0, fmt.Errorf("unknown window %q (want minute, hour or day)", s)
}

// index returns the number of the window that holds unix second t. Unix time counts
// from a UTC midnight and has no leap seconds, so dividing aligns every window to
// its UTC boundary.
func (w Window) index(t int64) int64 {
	n := w.Seconds()
	if t < 0 {
		return (t - n + 1) / n
	}
	return t / n
}

// Bounds returns the start and end of the window that holds t, in UTC.
func (w Window) Bounds(t time.Time) (start, end time.Time) {
	i := w.index(t.Unix())
	n := w.Seconds()
	return time.Unix(i*n, 0).UTC(), time.Unix((i+1)*n, 0).UTC()
}

// Dimension is what a quota counts calls of: an API, an app, or a user (an app's owner).
type Dimension uint8

// The dimensions of a policy.
const (
	DimAPI Dimension = iota + 1
	DimApp
	DimUser
)

func (d Dimension) String() string {
	switch d {
	case DimAPI:
		return "api"
	case DimApp:
		return "app"
	case DimUser:
		return "user"
	}
	return fmt.Sprintf("Dimension(%d)", uint8(d))
}

// Special overrides a policy's limit for one app or one user. Exactly one of App and
// User is set.
type Special struct {
	App   string
	User  string
	Limit int64
}

// Policy is a traffic policy: how many calls an API, each app and each user may make
// per window. A zero limit means that dimension is not limited. It mirrors
// fsm.TrafficSpec without depending on it.
type Policy struct {
	Name    string
	Window  Window
	API     int64 // calls to each API bound to the policy, all callers together
	App     int64 // calls by each app to each API
	User    int64 // calls by each user (all of the user's apps) to each API
	Special []Special
}

// ErrInvalidPolicy wraps every validation failure.
var ErrInvalidPolicy = errors.New("invalid traffic policy")

// Validate checks the policy as Alibaba Cloud API Gateway does: limits are not
// negative, an app limit does not exceed the user limit, a user limit does not exceed
// the API limit, and a special limit does not exceed the API limit. Errors name the
// field and wrap ErrInvalidPolicy.
func (p *Policy) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidPolicy, p.Name, fmt.Sprintf(format, a...))
	}
	if p.Name == "" {
		return fmt.Errorf("%w: name is required", ErrInvalidPolicy)
	}
	if !p.Window.Valid() {
		return bad("window must be minute, hour or day")
	}
	if p.API < 0 || p.App < 0 || p.User < 0 {
		return bad("api, app and user limits must not be negative")
	}
	if p.API == 0 && p.App == 0 && p.User == 0 && len(p.Special) == 0 {
		return bad("set at least one of api, app, user")
	}
	if p.App > 0 && p.User > 0 && p.App > p.User {
		return bad("app limit %d exceeds user limit %d", p.App, p.User)
	}
	if p.User > 0 && p.API > 0 && p.User > p.API {
		return bad("user limit %d exceeds api limit %d", p.User, p.API)
	}
	if p.App > 0 && p.API > 0 && p.App > p.API {
		return bad("app limit %d exceeds api limit %d", p.App, p.API)
	}
	seen := map[string]bool{}
	for i, s := range p.Special {
		if (s.App == "") == (s.User == "") {
			return bad("special[%d]: set exactly one of app and user", i)
		}
		if s.Limit <= 0 {
			return bad("special[%d]: limit must be positive", i)
		}
		if p.API > 0 && s.Limit > p.API {
			return bad("special[%d]: limit %d exceeds api limit %d", i, s.Limit, p.API)
		}
		k := "app:" + s.App
		if s.User != "" {
			k = "user:" + s.User
		}
		if seen[k] {
			return bad("special[%d]: %s is listed twice", i, k)
		}
		seen[k] = true
	}
	return nil
}

// compiledPolicy answers "what is the limit for this key" with map lookups only.
type compiledPolicy struct {
	Policy
	apps  map[string]int64
	users map[string]int64
}

func compile(p Policy) *compiledPolicy {
	c := &compiledPolicy{Policy: p, apps: map[string]int64{}, users: map[string]int64{}}
	for _, s := range p.Special {
		if s.App != "" {
			c.apps[s.App] = s.Limit
		} else {
			c.users[s.User] = s.Limit
		}
	}
	return c
}

// limit returns the quota for subject in dimension d; 0 means unlimited.
func (c *compiledPolicy) limit(d Dimension, subject string) int64 {
	switch d {
	case DimAPI:
		return c.API
	case DimApp:
		if v, ok := c.apps[subject]; ok {
			return v
		}
		return c.App
	case DimUser:
		if v, ok := c.users[subject]; ok {
			return v
		}
		return c.User
	}
	return 0
}
