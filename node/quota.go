package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/ratelimit"
	"golang.org/x/sys/unix"
)

// startQuotas creates the cluster-wide quota limiter and nonce store over gossip. They
// register their gossip channels here, before the node joins, so the push/pull of the
// join already carries the cluster's counts and nonces.
//
// A node with workers counts no quotas itself (its workers do, as members of their
// own); its nonce store keeps the table its workers share, in memory, and sends the
// nonces they use to the other nodes.
func (n *Node) startQuotas() error {
	var err error
	if n.cfg.Workers == 0 {
		n.limiter, err = ratelimit.New(ratelimit.Config{Transport: n.gossip.View(quotaRoles...), Registerer: n.reg})
		if err != nil {
			return fmt.Errorf("quota limiter: %w", err)
		}
	}
	shared := n.cfg.NonceFile
	if n.cfg.Workers > 0 {
		f, err := n.nonceTableFile()
		if err != nil {
			n.stopQuotas()
			return err
		}
		n.workerFiles = append(n.workerFiles, f)
		shared = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	n.nonces, err = ratelimit.NewNonceStore(ratelimit.NonceConfig{Transport: n.gossip.View(nonceRoles...), Registerer: n.reg,
		MaxEntries: n.cfg.NonceCapacity, SharedFile: shared})
	if err != nil {
		n.stopQuotas()
		return fmt.Errorf("nonce store: %w", err)
	}
	n.loadNonces()
	if n.limiter != nil {
		n.limiter.Start()
	}
	n.nonces.Start()
	return nil
}

// noncesFile is where a node that stops cleanly leaves its live nonces for its next
// start (ratelimit/noncesave.go): without them, a call signed in the 15 minutes before
// the stop could be replayed after it. A node in a cluster also learns them from the
// member it joins; a node alone has only this.
const noncesFile = "nonces"

// loadNonces remembers the nonces the node saved when it last stopped cleanly, and
// removes the file: they are in the table now. A file that does not load is left
// where it is, and said so.
func (n *Node) loadNonces() {
	path := filepath.Join(n.cfg.DataDir, noncesFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		n.log.Warn("nonces used before the last stop not loaded", "file", path, "err", err)
		return
	}
	count, err := n.nonces.LoadFrom(f)
	f.Close()
	if err != nil {
		n.log.Warn("nonces used before the last stop not loaded", "file", path, "err", err)
		return
	}
	_ = os.Remove(path)
	n.log.Info("remembered the nonces used before the last stop", "nonces", count)
}

// saveNonces writes the live nonces for the next start, once the data plane has
// stopped: to a temporary file, synced, then renamed, so a crash mid-way leaves the
// last whole file or none.
func (n *Node) saveNonces() {
	if n.nonces == nil {
		return
	}
	path := filepath.Join(n.cfg.DataDir, noncesFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		var count int
		if count, err = n.nonces.SaveTo(f); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, path)
		}
		if err == nil {
			n.log.Info("saved the live nonces for the next start", "nonces", count, "file", path)
			return
		}
	}
	_ = os.Remove(tmp)
	n.log.Warn("live nonces not saved: after a restart, calls signed before it could be replayed", "err", err)
}

// nonceTableFile is the file the node and its workers keep the nonce table in:
// NonceFile, or else an anonymous one in memory (memfd) that goes with the processes.
func (n *Node) nonceTableFile() (*os.File, error) {
	if n.cfg.NonceFile != "" {
		f, err := os.OpenFile(n.cfg.NonceFile, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("nonce file: %w", err)
		}
		return f, nil
	}
	fd, err := unix.MemfdCreate("tollgate-nonces", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("nonce table in memory (memfd): %w", err)
	}
	return os.NewFile(uintptr(fd), "tollgate-nonces"), nil
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
	if n.limiter == nil {
		return // the workers count quotas
	}
	ps, err := trafficPolicies(s)
	if err == nil {
		err = n.limiter.SetPolicies(withSubdomainCap(ps, n.cfg.SubdomainDailyLimit))
	}
	if err != nil {
		n.log.Error("traffic policies not applied", "err", err)
	}
}
