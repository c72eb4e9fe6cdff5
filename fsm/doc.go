// Package fsm is Tollgate's replicated state: the typed model (groups, APIs and their
// versioned deployments per stage, apps, grants, traffic policies, backend keys,
// certificates), the commands that change it, and the hashicorp/raft FSM that applies
// them.
//
// Every change is one command: a type byte followed by a msgpack body, applied by one
// function registered for that type. A command that cannot be decoded panics (the log
// is corrupt and the state must not diverge); a command that is decoded but invalid
// returns an error as its response and changes nothing. The state is immutable once
// published: Apply builds the next State from a copy and swaps it in atomically, so
// readers (the admin API, the route compiler, Snapshot) never take a lock.
//
// The package knows no network and imports none of Tollgate's other packages.
package fsm
