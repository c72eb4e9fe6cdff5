// Package node assembles a Tollgate node: the raft-replicated state (fsm over cluster),
// the data plane (proxy), and the admin API with health, readiness and metrics. It owns
// the node's lifecycle: open, serve, drain, close.
package node
