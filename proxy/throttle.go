package proxy

import (
	"strconv"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/ratelimit"
)

// SubdomainPolicy is the traffic policy the node registers to cap each group's default
// subdomain (<group>.<base-domain>) per day; custom domains are not capped.
const SubdomainPolicy = "tollgate:subdomain"

// buildThrottle compiles the quota check: the group's default-subdomain cap, then the
// API's traffic policy per API, per app and per user (the app's owner). Counters are
// resolved per request by name (Limiter.HandleScoped: a sharded read lock, no
// allocation), so a policy whose limits change takes effect on the next call even for
// a route reused across tables, and the step depends on the version alone.
func buildThrottle(b *builder, r *Route, def *fsm.APIDef) (Step, error) {
	lim := b.p.cfg.Limiter
	capped := b.p.cfg.SubdomainDailyLimit > 0
	policy := def.Traffic
	if lim == nil || (policy == "" && !capped) {
		return nil, nil
	}
	scope := r.ref + "@" + string(r.Stage) // an API's quota is its own in each stage
	group := r.Group
	subdomain := group + "." + b.p.base
	return func(c *Call) bool {
		var cs [4]*ratelimit.Counter
		var errs [4]*ErrorCode
		n := 0
		if capped && string(c.host) == subdomain {
			cs[n], errs[n] = lim.HandleScoped(SubdomainPolicy, ratelimit.DimAPI, group, "", false), ErrThrottledDomain
			n++
		}
		if policy != "" {
			cs[n], errs[n] = lim.HandleScoped(policy, ratelimit.DimAPI, scope, "", false), ErrThrottledAPI
			n++
			if a := c.app; a != nil {
				cs[n], errs[n] = lim.HandleScoped(policy, ratelimit.DimApp, a.name, scope, false), ErrThrottledApp
				n++
				if a.owner != "" {
					cs[n], errs[n] = lim.HandleScoped(policy, ratelimit.DimUser, a.owner, scope, false), ErrThrottledUser
					n++
				}
			}
		}
		ok, refused, retry := lim.AllowAll(cs[:n], c.Start)
		if ok {
			return true
		}
		c.Fail(errs[refused])
		secs := int64((retry + time.Second - 1) / time.Second)
		if secs < 1 {
			secs = 1
		}
		var tmp [20]byte
		c.Ctx.Response.Header.SetBytesV("Retry-After", strconv.AppendInt(tmp[:0], secs, 10))
		return false
	}, nil
}
