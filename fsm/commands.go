package fsm

import (
	"bytes"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// CommandType identifies a command in the raft log: the first byte of every entry.
// Numbers are never reused; a retired command keeps its number.
type CommandType uint8

// The commands. IgnoreUnknownFlag may be or-ed into a type so that a node that does
// not know the command skips it instead of stopping; use it only for commands whose
// loss cannot make states diverge.
const (
	CmdApplyBundle  CommandType = 1
	CmdDeploy       CommandType = 2
	CmdUndeploy     CommandType = 3
	CmdRollback     CommandType = 4
	CmdInitCluster  CommandType = 5
	CmdGrant        CommandType = 6
	CmdRevoke       CommandType = 7
	CmdRotateSecret CommandType = 8
	CmdSetAppState  CommandType = 9

	IgnoreUnknownFlag CommandType = 128
)

func (t CommandType) String() string {
	switch t &^ IgnoreUnknownFlag {
	case CmdApplyBundle:
		return "apply"
	case CmdDeploy:
		return "deploy"
	case CmdUndeploy:
		return "undeploy"
	case CmdRollback:
		return "rollback"
	case CmdInitCluster:
		return "init-cluster"
	case CmdGrant:
		return "grant"
	case CmdRevoke:
		return "revoke"
	case CmdRotateSecret:
		return "rotate-secret"
	case CmdSetAppState:
		return "set-app-state"
	}
	return fmt.Sprintf("command(%d)", uint8(t))
}

// ApplyBundle makes the state match a declarative bundle, whole or not at all.
type ApplyBundle struct {
	Bundle Bundle    `msgpack:"bundle"`
	At     time.Time `msgpack:"at"`
}

// Deploy freezes an API's current definition as a new version and serves it in a stage.
type Deploy struct {
	API   string    `msgpack:"api"`
	Stage Stage     `msgpack:"stage"`
	Note  string    `msgpack:"note"`
	At    time.Time `msgpack:"at"`
}

// Undeploy stops serving an API in a stage; its history stays.
type Undeploy struct {
	API   string `msgpack:"api"`
	Stage Stage  `msgpack:"stage"`
}

// Rollback makes an earlier version of an API current in a stage.
type Rollback struct {
	API     string `msgpack:"api"`
	Stage   Stage  `msgpack:"stage"`
	Version int    `msgpack:"version"`
}

// InitCluster sets the cluster secret, once: the first one committed wins, so two
// leaders racing to set it agree.
type InitCluster struct {
	Secret string `msgpack:"secret"`
}

// Grant authorizes an app for an API in some stages, replacing any grant it had for
// that API.
type Grant struct {
	Grant GrantSpec `msgpack:"grant"`
}

// Revoke removes an app's grant for an API.
type Revoke struct {
	App string `msgpack:"app"`
	API string `msgpack:"api"`
}

// RotateSecret makes Secret the app's newest secret; the previous one stays live
// beside it, the one before that stops working.
type RotateSecret struct {
	App    string `msgpack:"app"`
	Secret string `msgpack:"secret"`
}

// SetAppState enables or disables an app.
type SetAppState struct {
	App      string `msgpack:"app"`
	Disabled bool   `msgpack:"disabled"`
}

// Encode renders a command as a log entry: the type byte, then the msgpack body.
// Map keys are sorted so that the same command always encodes to the same bytes.
func Encode(t CommandType, body any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(byte(t))
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(body); err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return buf.Bytes(), nil
}

// applyFunc applies one decoded command to next, a private copy of the state. An error
// means the command is refused: next is discarded and nothing changes.
type applyFunc func(next *State, body []byte) (any, error)

var commands = map[CommandType]applyFunc{}

// register binds a command type to its apply function. Decoding failures panic: a log
// entry that cannot be read means a corrupt log or an incompatible binary, and going on
// would let this node's state diverge from the others'.
func register[T any](t CommandType, apply func(next *State, cmd *T) (any, error)) {
	if _, dup := commands[t]; dup {
		panic(fmt.Sprintf("fsm: command %d registered twice", t))
	}
	commands[t] = func(next *State, body []byte) (any, error) {
		cmd := new(T)
		if err := msgpack.Unmarshal(body, cmd); err != nil {
			panic(fmt.Sprintf("fsm: cannot decode %s command: %v", t, err))
		}
		return apply(next, cmd)
	}
}

func init() {
	register(CmdApplyBundle, applyBundle)
	register(CmdDeploy, applyDeploy)
	register(CmdUndeploy, applyUndeploy)
	register(CmdRollback, applyRollback)
	register(CmdInitCluster, applyInitCluster)
	register(CmdGrant, applyGrant)
	register(CmdRevoke, applyRevoke)
	register(CmdRotateSecret, applyRotateSecret)
	register(CmdSetAppState, applySetAppState)
}
