package node

import (
	"fmt"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/ratelimit"
)

// startQuotas creates the cluster-wide quota limiter and nonce store over gossip. They
// register their gossip channels here, before the node joins, so the push/pull of the
// join already carries the cluster's counts and nonces.
func (n *Node) startQuotas() error {
	var err error
	n.limiter, err = ratelimit.New(ratelimit.Config{Transport: n.gossip, Registerer: n.reg})
	if err != nil {
		return fmt.Errorf("quota limiter: %w", err)
	}
	n.nonces, err = ratelimit.NewNonceStore(ratelimit.NonceConfig{Transport: n.gossip, Registerer: n.reg, MaxEntries: n.cfg.NonceCapacity,
		SharedFile: n.cfg.NonceFile})
	if err != nil {
		n.limiter.Close()
		return fmt.Errorf("nonce store: %w", err)
	}
	n.limiter.Start()
	n.nonces.Start()
	return nil
}

func (n *Node) stopQuotas() {
	if n.limiter != nil {
		n.limiter.Close()
	}
	if n.nonces != nil {
		n.nonces.Close()
	}
}

// trafficPolicies converts the state's traffic policies for the limiter. Validation
// refused bad ones before they were committed.
func trafficPolicies(s *fsm.State) ([]ratelimit.Policy, error) {
	out := make([]ratelimit.Policy, 0, len(s.Traffic))
	for _, name := range fsm.SortedKeys(s.Traffic) {
		t := s.Traffic[name]
		w, err := ratelimit.ParseWindow(t.Window)
		if err != nil {
			return nil, fmt.Errorf("traffic %s: %w", name, err)
		}
		p := ratelimit.Policy{Name: t.Name, Window: w, API: t.API, App: t.App, User: t.User}
		for _, sp := range t.Special {
			p.Special = append(p.Special, ratelimit.Special{App: sp.App, User: sp.User, Limit: sp.Limit})
		}
		out = append(out, p)
	}
	return out, nil
}

// withSubdomainCap adds the policy that caps each group's default subdomain.
func withSubdomainCap(ps []ratelimit.Policy, perDay int64) []ratelimit.Policy {
	if perDay <= 0 {
		return ps
	}
	return append(ps, ratelimit.Policy{Name: proxy.SubdomainPolicy, Window: ratelimit.Day, API: perDay})
}

// updatePolicies hands the state's traffic policies to the limiter. It runs before the
// routing table that refers to them is swapped in.
func (n *Node) updatePolicies(s *fsm.State) {
	ps, err := trafficPolicies(s)
	if err == nil {
		err = n.limiter.SetPolicies(withSubdomainCap(ps, n.cfg.SubdomainDailyLimit))
	}
	if err != nil {
		n.log.Error("traffic policies not applied", "err", err)
	}
}
