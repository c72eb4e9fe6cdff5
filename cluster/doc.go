// Package cluster runs a node's membership (memberlist) and consensus (raft).
//
// Membership and failure detection come from one memberlist instance per node
// (Gossip), tuned so a dead member is noticed within about a second. Gossip also
// carries the data that must reach every node fast but need not be ordered — rate
// limit counts and used nonces — as direct sends to each live member, multiplexed by
// a channel byte so each user registers its own handler. Config is ordered and
// durable, so it goes through raft instead.
//
// cluster imports neither ratelimit nor proxy: Gossip satisfies ratelimit's
// Transport interface structurally, and the node package wires the two together.
package cluster
