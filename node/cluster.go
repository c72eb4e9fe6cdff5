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
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/tollgate/tollgate/cluster"
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
		Meta:      cluster.NodeMeta{ID: n.cfg.NodeID, RaftAddr: n.cfg.Raft, AdminAddr: n.advertisedAdmin()},
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
	secret := n.fsm.State().ClusterSecret
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

// waitApplied waits until this node has applied index and its data plane serves it.
func (n *Node) waitApplied(index uint64, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for n.appliedIndex() < index && time.Now().Before(deadline) {
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
}

func (n *Node) raftStatus(w http.ResponseWriter, r *http.Request) {
	st := RaftStatus{ID: n.cfg.NodeID, Leader: n.raft.State() == raft.Leader, AppliedIndex: n.appliedIndex()}
	st.CommitIndex, _ = strconv.ParseUint(n.raft.Stats()["commit_index"], 10, 64)
	if st.Leader {
		st.CommitIndex = max(st.CommitIndex, n.raft.CommitIndex())
	}
	writeJSON(w, 200, st)
}

// leaderCommitIndex asks the leader what it has committed.
func (n *Node) leaderCommitIndex() (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.raft.CommitIndex(), nil
	}
	addr, err := n.leaderAdmin()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/raft", nil)
	resp, err := n.forwardClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st RaftStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, err
	}
	if !st.Leader {
		return 0, errors.New("asked node is no longer the leader")
	}
	return st.CommitIndex, nil
}
