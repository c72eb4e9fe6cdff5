package ratelimit

// Transport is how the limiter and the nonce store reach the other nodes. cluster.Gossip
// implements it (structurally: neither package imports the other); nil means a node
// on its own. Implementations must be safe for concurrent use.
type Transport interface {
	// LocalName is this node's unique member name.
	LocalName() string
	// MemberNames lists the live members, this node included, in the same order on
	// every node (sorted). Called once per flush, never on the hot path.
	MemberNames() []string
	// SendToAll sends msg on channel to every other live member, directly (not by
	// epidemic gossip). It may be lossy (UDP); callers repeat what must not be lost.
	// The transport does not keep msg after it returns.
	SendToAll(channel byte, msg []byte) error
	// Register attaches handlers to a channel: onMsg gets every message sent to it
	// (and must not keep msg or block); localState and mergeState join the
	// transport's push/pull state exchange, which runs when a node joins (before
	// Join returns) and periodically after.
	Register(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error
}

// LargeStateTransport is a Transport whose join exchange can carry a state built when
// the joining side asks for it, after the exchange (cluster.Gossip): every live nonce
// takes seconds to collect from a large table, and memberlist times its exchange out
// after 2 s. The nonce store registers through it when it can.
type LargeStateTransport interface {
	RegisterLarge(channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error
}

// registerLarge registers through RegisterLarge when tr has it, else Register.
func registerLarge(tr Transport, channel byte, onMsg func(msg []byte), localState func(join bool) []byte, mergeState func(buf []byte, join bool)) error {
	if lt, ok := tr.(LargeStateTransport); ok {
		return lt.RegisterLarge(channel, onMsg, localState, mergeState)
	}
	return tr.Register(channel, onMsg, localState, mergeState)
}

// Introducer is a Transport that can ask a member it lists to exchange state with
// this node directly, now (a push/pull, as on join), so that the member lists this
// node too. The limiter calls it for a live member that has sent nothing for a while,
// the nonce store for one that leaves its batches unacknowledged. Introduce must not
// block: it starts the exchange and returns.
type Introducer interface {
	Introduce(name string)
}

// Default channels on the Transport. The node may choose others (Config.Channel).
const (
	ChannelCounts byte = 1
	ChannelNonces byte = 2
)
