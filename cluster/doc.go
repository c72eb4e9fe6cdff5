// Package cluster runs a node's membership (memberlist) and consensus (raft).
//
// Membership and failure detection come from one memberlist instance per node
// (Gossip), tuned so a dead member is noticed within about a second. Gossip also
// carries the data that must reach every node fast but need not be ordered — rate
// limit counts and used nonces — as direct sends to each live member, multiplexed by
// a channel byte so each user registers its own handler. A join exchanges each
// user's whole state before it returns, whatever its size: memberlist's exchange
// takes 20 MiB at most, so larger states follow it in chunks (bulkstate.go). Config
// is ordered and durable, so it goes through raft instead.
//
// Raft (Raft, OpenRaft) keeps the config log in raft-boltdb and talks to its peers
// through StreamLayer: TCP, or mutual TLS when the node has certificates from the
// cluster CA (LoadTLS), with an outbound drop filter that tests use to cut links. Its
// timeouts are short (200 ms heartbeat and election, 5 ms commit) so a lost leader is
// replaced in about half a second and followers serve a commit within milliseconds.
// Snapshots compact the log on a schedule and a size threshold (RaftConfig); a node far
// behind installs the leader's snapshot. Membership makes raft's configuration follow
// gossip: the leader adds members that pass a probe of their raft address (with TLS, a
// mutual handshake, so a node without the cluster's certificates never becomes a
// voter), promotes non-voters, and removes members that left or stayed dead.
//
// cluster imports neither ratelimit nor proxy: Gossip satisfies ratelimit's
// Transport interface structurally, and the node package wires the two together.
package cluster
