package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/cluster"
	"github.com/tollgate/tollgate/fsm"
)

// Internal admin headers: a forwarded write carries forwardedHeader so it is never
// forwarded twice; every write answer carries indexHeader, the raft index it applied
// at, so a forwarding node can wait until it serves that index too.
const (
	forwardedHeader = "X-Tollgate-Forwarded"
	indexHeader     = "X-Tollgate-Index"
	staleHeader     = "X-Tollgate-Stale"
)

// startGossip creates the node's memberlist, publishing the addresses other nodes need,
// and joins the given members.
func (n *Node) startGossip() error {
	host, port, err := net.SplitHostPort(n.cfg.Gossip)
	if err != nil {
		return fmt.Errorf("gossip address %q: %w", n.cfg.Gossip, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("gossip address %q: bad port", n.cfg.Gossip)
	}
	n.gossip, err = cluster.NewGossip(cluster.GossipConfig{
		NodeName:  n.cfg.NodeID,
		BindAddr:  host,
		BindPort:  p,
		SecretKey: n.cfg.GossipKey,
		Meta: cluster.NodeMeta{ID: n.cfg.NodeID, RaftAddr: n.cfg.Raft, AdminAddr: n.advertisedAdmin(),
			RaftTLS: n.cfg.RaftTLSCA != "", Role: n.role()},
		LogOutput: n.cfg.RaftLog,
	})
	return err
}

// advertisedAdmin is the admin address other nodes dial: the bound one, with the raft
// host when bound to every interface.
func (n *Node) advertisedAdmin() string {
	host, port, _ := net.SplitHostPort(n.adminLn.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host, _, _ = net.SplitHostPort(n.cfg.Raft)
	}
	return net.JoinHostPort(host, port)
}

// joinCluster contacts the members in cfg.Join until one answers; the leader then adds
// this node to raft (cluster.Membership).
func (n *Node) joinCluster() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := n.gossip.Join(n.cfg.Join)
		if err == nil {
			n.checkRaftTLS()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("join %v: %w", n.cfg.Join, err)
		}
		n.log.Warn("join failed; retrying", "members", n.cfg.Join, "err", err)
		select {
		case <-time.After(time.Second):
		case <-n.stop:
			return errors.New("stopped while joining")
		}
	}
}

// checkRaftTLS logs, on a joining node, that its raft TLS setting differs from the
// members it sees: the leader will not add it to raft (cluster.Membership), so it will
// never be ready, and the log line says why.
func (n *Node) checkRaftTLS() {
	mine := n.cfg.RaftTLSCA != ""
	for _, m := range n.gossip.Members() {
		if m.Name == n.cfg.NodeID || m.State != cluster.MemberAlive || m.Meta.ID == "" || m.Meta.RaftTLS == mine {
			continue
		}
		if mine {
			n.log.Error("this node has raft TLS but the cluster it joined does not: the leader will not add it to raft, and it will not become ready",
				"member", m.Meta.ID)
		} else {
			n.log.Error("the cluster this node joined runs raft over TLS and this node has no --raft-tls-* certificates: it will not be added to raft, and will not become ready",
				"member", m.Meta.ID)
		}
		return
	}
}

// peersFile, in the data dir, lists the gossip addresses of the other members this node
// last saw alive, one a line, so that a node restarted without --join finds them again.
const peersFile = "peers"

// rememberPeers writes the live members' gossip addresses to peersFile. It runs on the
// gossip event goroutine, after each membership change.
func (n *Node) rememberPeers() {
	var addrs []string
	for _, m := range n.gossip.Members() {
		// Workers come and go with their node, at new addresses.
		if m.Name != n.cfg.NodeID && m.State == cluster.MemberAlive && m.Meta.Role != cluster.RoleWorker {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) == 0 {
		return // keep the last list: a node cut off or alone still knows whom to call
	}
	path := filepath.Join(n.cfg.DataDir, peersFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(addrs, "\n")+"\n"), 0o600); err != nil {
		n.log.Warn("remember peers", "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		n.log.Warn("remember peers", "err", err)
	}
}

// rejoinPeers joins the members listed in peersFile, retrying (every 1 to 5 s) until one
// answers or the node stops: after a whole-cluster outage the others may come back later.
func (n *Node) rejoinPeers() {
	defer n.wg.Done()
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, peersFile))
	if err != nil {
		return
	}
	addrs := strings.Fields(string(b))
	if len(addrs) == 0 {
		return
	}
	wait := time.Second
	for {
		if _, err := n.gossip.Join(addrs); err == nil {
			n.log.Info("rejoined the cluster", "members", addrs)
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// leaderAdmin returns the leader's admin address from gossip metadata.
func (n *Node) leaderAdmin() (string, error) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return "", cluster.ErrNoLeader
	}
	if string(id) == n.cfg.NodeID {
		return n.advertisedAdmin(), nil
	}
	for _, m := range n.gossip.Members() {
		if m.Meta.ID == string(id) && m.Meta.AdminAddr != "" {
			return m.Meta.AdminAddr, nil
		}
	}
	return "", fmt.Errorf("leader %s is not known to gossip yet: %w", id, cluster.ErrNoLeader)
}

// forward sends an admin request to the leader, authenticated with the cluster secret,
// and relays its answer. The caller sees the leader's result.
func (n *Node) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	addr, err := n.leaderAdmin()
	if err != nil {
		e := toAPIError(err)
		writeJSON(w, e.Status, map[string]any{"error": e})
		return
	}
	// A cluster just bootstrapped sets its secret within moments of electing a leader.
	secret := n.fsm.State().ClusterSecret
	for deadline := time.Now().Add(3 * time.Second); secret == "" && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		secret = n.fsm.State().ClusterSecret
	}
	if secret == "" {
		writeJSON(w, 503, map[string]any{"error": &APIError{Status: 503, Message: "this node has not caught up with the cluster yet; retry"}})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout+2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeJSON(w, 500, map[string]any{"error": &APIError{Status: 500, Message: err.Error()}})
		return
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, n.cfg.NodeID)
	resp, err := n.forwardClient.Do(req)
	if err != nil {
		writeJSON(w, 503, map[string]any{"error": &APIError{Status: 503, Message: fmt.Sprintf("forward to the leader at %s: %v", addr, err)}})
		return
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if idx, err := strconv.ParseUint(resp.Header.Get(indexHeader), 10, 64); err == nil {
		// Answer only once this node serves the write too.
		n.waitApplied(idx, 2*time.Second)
		w.Header().Set(indexHeader, strconv.FormatUint(idx, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	w.Write(data)
}

// waitApplied waits until this node's FSM has applied index (a command's, from the
// leader's indexHeader) and its data plane serves it.
func (n *Node) waitApplied(index uint64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for n.fsm.AppliedIndex() < index && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	n.waitServed(n.fsm.State().Index, time.Until(deadline))
}

// RaftStatus is what /v1/raft answers (no token: it is what a joining node asks the
// leader before it holds the cluster secret).
type RaftStatus struct {
	ID           string `json:"id"`
	Leader       bool   `json:"leader"`
	CommitIndex  uint64 `json:"commitIndex"`
	AppliedIndex uint64 `json:"appliedIndex"`
	// StateIndex is the index of the last change in the node's state (on a leader, read
	// after CommitIndex, so it covers every committed change).
	StateIndex uint64 `json:"stateIndex"`
}

func (n *Node) raftStatus(w http.ResponseWriter, r *http.Request) {
	st := RaftStatus{ID: n.cfg.NodeID, Leader: n.raft.State() == raft.Leader, AppliedIndex: n.appliedIndex()}
	if st.Leader {
		// A leader answers its commit index once it covers every earlier leader's
		// (0 until then): what a joining node must apply before it is ready.
		st.CommitIndex, _ = n.raft.SettledCommitIndex(time.Second)
	} else {
		st.CommitIndex = n.raft.CommitIndex()
	}
	st.StateIndex = n.fsm.State().Index
	writeJSON(w, 200, st)
}

// leaderCommitIndex asks the leader what it has committed, and the index of the last
// change its state holds (StateIndex).
func (n *Node) leaderCommitIndex() (commit, state uint64, err error) {
	if n.raft.State() == raft.Leader {
		commit, err := n.raft.SettledCommitIndex(2 * time.Second)
		return commit, n.fsm.State().Index, err
	}
	addr, err := n.leaderAdmin()
	if err != nil {
		return 0, 0, err
	}
	st, err := n.askRaftStatus(context.Background(), addr, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	if !st.Leader {
		return 0, 0, errors.New("asked node is no longer the leader")
	}
	if st.CommitIndex == 0 {
		return 0, 0, errors.New("the leader has not settled its commit index yet")
	}
	return st.CommitIndex, st.StateIndex, nil
}

// askRaftStatus asks the node whose admin API is at addr for its /v1/raft.
func (n *Node) askRaftStatus(ctx context.Context, addr string, timeout time.Duration) (*RaftStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/raft", nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.forwardClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st RaftStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

// provisionalLoop serves a restarted node's own state while the cluster has no quorum.
//
// hashicorp/raft applies the entries in a node's log only once a leader says they are
// committed, so a node restarted while a majority is down would otherwise serve just
// its last snapshot — or nothing at all, since it is not ready. If no leader has
// appeared within ProvisionalWait, the node instead builds a provisional state: the
// snapshot raft restored (restored, at index restoredIndex) plus every entry of its
// local log after it, replayed on a private FSM. The data plane serves that, admin
// reads answer from it marked stale, and the node turns ready so that a load balancer
// keeps sending it traffic: serving the last config beats serving nothing. The local
// log may end with entries that were never committed (the last writes before a crash);
// they are served too, until a leader is back. Once the node has caught up with a
// leader (readyLoop), the FSM's state replaces the provisional one for good.
func (n *Node) provisionalLoop(restored *fsm.State, restoredIndex uint64) {
	defer n.wg.Done()
	t := time.NewTimer(n.cfg.ProvisionalWait)
	defer t.Stop()
	select {
	case <-n.stop:
		return
	case <-t.C:
	}
	if addr, _ := n.raft.LeaderWithID(); addr != "" || n.ready.Load() {
		return // a leader is there: the ordinary catch-up is on its way
	}
	s, last, err := n.replayLocal(restored, restoredIndex)
	if err != nil {
		n.log.Error("no leader, and the local log cannot be replayed: not serving a provisional state", "err", err)
		return
	}
	n.provMu.Lock()
	defer n.provMu.Unlock()
	if n.caughtUp {
		return
	}
	n.provisional.Store(s)
	n.proxy.Update(s)
	if err := n.certs.update(s); err != nil {
		n.log.Error("TLS certificates", "err", err)
	}
	n.ready.Store(true)
	n.log.Warn("no leader: serving this node's own snapshot and log (provisional, not confirmed by a quorum) until a leader is back",
		"snapshot_index", restoredIndex, "log_index", last, "state_index", s.Index)
}

// replayLocal applies the local log after restoredIndex to a copy of restored.
func (n *Node) replayLocal(restored *fsm.State, restoredIndex uint64) (s *fsm.State, last uint64, err error) {
	var buf bytes.Buffer
	if err := fsm.WriteSnapshot(&buf, restored); err != nil {
		return nil, 0, err
	}
	scratch := fsm.New()
	if err := scratch.Restore(io.NopCloser(&buf)); err != nil {
		return nil, 0, err
	}
	defer func() {
		if p := recover(); p != nil { // an entry this binary cannot read
			err = fmt.Errorf("replay: %v", p)
		}
	}()
	err = n.raft.LocalLog(restoredIndex+1, func(l *raft.Log) error {
		scratch.Apply(l)
		last = l.Index
		return nil
	})
	return scratch.State(), last, err
}

// role is the node's gossip role: a control when its data plane runs in workers.
func (n *Node) role() string {
	if n.cfg.Workers > 0 {
		return cluster.RoleControl
	}
	return cluster.RoleNode
}
