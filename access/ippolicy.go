package access

import (
	"fmt"
	"net/netip"

	"github.com/tollgate/tollgate/fsm"
)

// IPRules is an IP policy compiled for the per-request check: the allow and deny lists
// of fsm.IPPolicy and its per-app allow lists, each as a sorted, merged range table.
//
// An IPRules is immutable once compiled and safe for concurrent use. A nil *IPRules is
// the absence of a policy and allows every address.
type IPRules struct {
	name  string
	allow rangeSet
	deny  rangeSet
	// apps holds the allow list of each app the policy names. A map lookup with a string
	// key allocates nothing, and a policy names few apps.
	apps map[string]*rangeSet
}

// CompileIPPolicy compiles p. Entries are CIDRs or bare addresses, IPv4 or IPv6; an
// IPv4-mapped IPv6 entry (::ffff:192.0.2.0/120) means the IPv4 prefix it maps. It fails
// on the first entry that is neither, naming it; fsm's validator refuses the same
// entries, so a committed policy always compiles. A nil p compiles to nil: no policy.
func CompileIPPolicy(p *fsm.IPPolicy) (*IPRules, error) {
	if p == nil {
		return nil, nil
	}
	r := &IPRules{name: p.Name}
	var err error
	if r.allow, err = compileRanges(p.Allow); err != nil {
		return nil, fmt.Errorf("ip policy %q: allow: %w", p.Name, err)
	}
	if r.deny, err = compileRanges(p.Deny); err != nil {
		return nil, fmt.Errorf("ip policy %q: deny: %w", p.Name, err)
	}
	for _, a := range p.Apps {
		rs, err := compileRanges(a.Allow)
		if err != nil {
			return nil, fmt.Errorf("ip policy %q: app %q: %w", p.Name, a.App, err)
		}
		if r.apps == nil {
			r.apps = make(map[string]*rangeSet, len(p.Apps))
		}
		r.apps[a.App] = &rs
	}
	return r, nil
}

// Name returns the name of the policy r was compiled from.
func (r *IPRules) Name() string {
	if r == nil {
		return ""
	}
	return r.name
}

// NeedsApp reports whether the policy has per-app lists, so that its answer for a
// client can depend on which app calls. The proxy can check a policy without them in
// its guard stage, before auth; a policy with them must be checked once the app is
// known (after auth), since an app's own list may allow an address the API-wide allow
// list does not.
func (r *IPRules) NeedsApp() bool { return r != nil && len(r.apps) > 0 }

// Allowed reports whether a client at ip may call, as app when app is not empty. The
// order is Alibaba's ipControl order: a denied address is refused whatever the app; an
// app the policy lists may call only from its own list; anyone else may call from the
// allow list, or from anywhere when the allow list is empty. IPv4 and IPv4-mapped IPv6
// addresses are the same client. An invalid (zero) ip is refused by any policy, so a
// client whose address could not be read does not slip past one.
//
// Allowed never allocates and takes no lock; it is safe for concurrent use.
func (r *IPRules) Allowed(ip netip.Addr, app string) bool {
	if r == nil {
		return true
	}
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	if r.deny.contains(ip) {
		return false
	}
	if app != "" && r.apps != nil {
		if rs := r.apps[app]; rs != nil {
			return rs.contains(ip)
		}
	}
	return r.allow.empty() || r.allow.contains(ip)
}
