package node

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/fsm"
	"github.com/tollgate/tollgate/proxy"
	"github.com/tollgate/tollgate/ratelimit"
	"github.com/tollgate/tollgate/signature"
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
	if n.noncesLoaded, err = n.recallNonces(); err != nil {
		n.stopQuotas()
		return err
	}
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

// unsavedFile marks a data dir whose node may have used nonces it has not saved: it
// is written before the node serves and removed once a clean stop has saved them. A
// start that finds it and no saved nonces follows a run that ended without saving (a
// crash, a kill): the nonces that run used are lost.
const unsavedFile = "nonces.unsaved"

// horizonFile keeps the nonce horizon (Unix milliseconds) set after such a loss, so
// that a clean restart within the window does not drop it: the nonces lost in the
// crash are still not in the table the restart saves and loads.
const horizonFile = "nonces.horizon"

// crashClockLead is how far ahead of the node's clock a client's may run and still
// have its calls signed before a crash refused after the restart: the horizon is the
// restart plus this. Calls signed in the first crashClockLead after a crash restart
// are refused too (A400SR); a client that signs again then passes.
const crashClockLead = 2 * time.Second

// recallNonces puts back what the node knew of used nonces before this start: the
// nonces a clean stop saved, and else, if the last run served and lost its own, a
// horizon before which signed calls are refused (ratelimit.NonceStore.SetHorizon),
// as is a horizon set within the window before. It returns whether a saved file was
// loaded; markUnsaved removes it once the node is about to serve.
func (n *Node) recallNonces() (loaded bool, err error) {
	dir := n.cfg.DataDir
	_, err = os.Stat(filepath.Join(dir, unsavedFile))
	unsaved := err == nil
	loaded, damaged := n.loadNonces()
	now := time.Now()
	horizon := readHorizon(filepath.Join(dir, horizonFile), n.log)
	if damaged || unsaved && !loaded && !n.nonces.Kept() {
		horizon = now.Add(crashClockLead).UnixMilli()
		b := strconv.AppendInt(nil, horizon, 10)
		if err := replaceFile(filepath.Join(dir, horizonFile), func(f *os.File) error { _, err := f.Write(b); return err }); err != nil {
			return false, fmt.Errorf("nonce horizon: %w", err)
		}
		n.log.Warn("the last run ended without saving its used nonces: calls signed before the restart are refused (A400SR) for the signature window",
			"horizon", time.UnixMilli(horizon).UTC().Format(time.RFC3339Nano))
	}
	if horizon > 0 && now.Before(time.UnixMilli(horizon).Add(signature.DefaultWindow)) {
		n.nonces.SetHorizon(time.UnixMilli(horizon))
	} else if horizon > 0 {
		_ = os.Remove(filepath.Join(dir, horizonFile)) // every call signed before it has expired
	}
	return loaded, nil
}

// readHorizon reads horizonFile: 0 when there is none. One that does not parse is
// logged and read as 0: the horizon a new loss sets is always later than an old one.
func readHorizon(path string, log *slog.Logger) int64 {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	var ms int64
	if err == nil {
		ms, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	if err != nil {
		log.Warn("nonce horizon not read", "file", path, "err", err)
		return 0
	}
	return ms
}

// markUnsaved writes unsavedFile, durably, before the node serves, and then removes
// the saved nonces recallNonces loaded: from here on they live only in memory.
func (n *Node) markUnsaved() error {
	if err := replaceFile(filepath.Join(n.cfg.DataDir, unsavedFile), func(*os.File) error { return nil }); err != nil {
		return fmt.Errorf("nonce marker: %w", err)
	}
	if n.noncesLoaded {
		_ = os.Remove(filepath.Join(n.cfg.DataDir, noncesFile))
	}
	return nil
}

// loadNonces remembers the nonces the node saved when it last stopped cleanly. A file
// that does not load is left where it is, said so, and reported damaged: the nonces
// in it are lost.
func (n *Node) loadNonces() (loaded, damaged bool) {
	path := filepath.Join(n.cfg.DataDir, noncesFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, false
	}
	if err != nil {
		n.log.Warn("nonces used before the last stop not loaded", "file", path, "err", err)
		return false, true
	}
	count, err := n.nonces.LoadFrom(f)
	f.Close()
	if err != nil {
		n.log.Warn("nonces used before the last stop not loaded", "file", path, "err", err)
		return false, true
	}
	n.log.Info("remembered the nonces used before the last stop", "nonces", count)
	return true, false
}

// saveNonces writes the live nonces for the next start, once the data plane has
// stopped, and then removes unsavedFile: the next start knows it lost nothing.
func (n *Node) saveNonces() {
	if n.nonces == nil {
		return
	}
	path := filepath.Join(n.cfg.DataDir, noncesFile)
	var count int
	err := replaceFile(path, func(f *os.File) (err error) {
		count, err = n.nonces.SaveTo(f)
		return err
	})
	if err == nil {
		// No marker: the start failed before it served, and used none.
		if rerr := os.Remove(filepath.Join(n.cfg.DataDir, unsavedFile)); !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	if err != nil {
		n.log.Warn("live nonces not saved: the next start refuses calls signed before it for the signature window", "err", err)
		return
	}
	n.log.Info("saved the live nonces for the next start", "nonces", count, "file", path)
}

// replaceFile writes path through write: to a temporary file, synced, renamed over
// path, and the directory synced, so a crash at any point leaves the old file whole
// or the new one, and a file written survives one.
func replaceFile(path string, write func(*os.File) error) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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

// The signature check asks the node's nonce store for its horizon.
var _ signature.NonceHorizon = (*ratelimit.NonceStore)(nil)

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
