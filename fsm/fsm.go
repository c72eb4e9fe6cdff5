package fsm

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"
)

// FSM is the raft state machine. Apply, Snapshot and Restore are called by raft from
// one goroutine at a time; State and Changed are safe for concurrent use from anywhere.
type FSM struct {
	state   atomic.Pointer[State]
	applied atomic.Uint64
	changed chan struct{}
}

var _ raft.FSM = (*FSM)(nil)

// New returns an FSM holding an empty state.
func New() *FSM {
	f := &FSM{changed: make(chan struct{}, 1)}
	f.state.Store(NewState())
	return f
}

// State returns the current state. It never blocks; the State must not be modified.
func (f *FSM) State() *State { return f.state.Load() }

// AppliedIndex is the raft index of the last log entry applied, whether or not it
// changed anything.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Changed receives a value after the state changes. Notifications coalesce: a reader
// that falls behind gets one notification for many changes and reads the latest State.
func (f *FSM) Changed() <-chan struct{} { return f.changed }

func (f *FSM) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Apply applies one committed log entry. Its response is the command's result, or an
// error when the command was refused (in which case the state is unchanged).
func (f *FSM) Apply(l *raft.Log) any {
	defer f.applied.Store(l.Index)
	if l.Type != raft.LogCommand {
		return nil
	}
	if len(l.Data) == 0 {
		panic(fmt.Sprintf("fsm: empty log entry at index %d", l.Index))
	}
	t := CommandType(l.Data[0])
	apply, ok := commands[t&^IgnoreUnknownFlag]
	if !ok {
		if t&IgnoreUnknownFlag != 0 {
			return nil
		}
		panic(fmt.Sprintf("fsm: unknown command type %d at index %d", t, l.Index))
	}
	next := f.state.Load().clone()
	res, err := apply(next, l.Data[1:])
	if err != nil {
		return err
	}
	next.Index = l.Index
	f.state.Store(next)
	// The index first: a reader woken by the notification must see it applied.
	f.applied.Store(l.Index)
	f.notify()
	return res
}

// ApplyLocal runs a command against a private copy of the current state without
// changing it: what the command would do, for dry runs and validation before proposing.
func (f *FSM) ApplyLocal(t CommandType, body any) (any, error) {
	data, err := Encode(t, body)
	if err != nil {
		return nil, err
	}
	apply, ok := commands[t]
	if !ok {
		return nil, fmt.Errorf("unknown command %s", t)
	}
	return apply(f.state.Load().clone(), data[1:])
}

// Snapshot captures the current state pointer; Persist does the I/O on raft's
// snapshot goroutine while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{state: f.state.Load()}, nil
}

// Restore replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.state.Store(s)
	if s.Index > f.applied.Load() {
		f.applied.Store(s.Index)
	}
	f.notify()
	return nil
}

// snapshotVersion is the first byte of every snapshot, so the format can change.
const snapshotVersion = 1

type snapshot struct{ state *State }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.state); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// snapshotV1 is the state as a snapshot holds it: every map as a list in key order,
// because msgpack writes typed maps in Go's random iteration order and a snapshot of
// one state must always be the same bytes. Keys are derived from the values on restore.
type snapshotV1 struct {
	Index        uint64        `msgpack:"index"`
	Groups       []Group       `msgpack:"groups"`
	APIs         []API         `msgpack:"apis"`
	Deployments  []Deployment  `msgpack:"deployments"`
	Apps         []App         `msgpack:"apps"`
	Grants       []GrantSpec   `msgpack:"grants"`
	Traffic      []TrafficSpec `msgpack:"traffic"`
	IPPolicies   []IPPolicy    `msgpack:"ip_policies"`
	BackendKeys  []BackendKey  `msgpack:"backend_keys"`
	Certificates []Certificate `msgpack:"certificates"`

	ClusterSecret string `msgpack:"cluster_secret"`
}

func sortedValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range SortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func keyed[V any](list []V, key func(V) string) map[string]V {
	m := make(map[string]V, len(list))
	for _, v := range list {
		m[key(v)] = v
	}
	return m
}

// WriteSnapshot encodes a whole state deterministically.
func WriteSnapshot(w io.Writer, s *State) error {
	if _, err := w.Write([]byte{snapshotVersion}); err != nil {
		return err
	}
	enc := msgpack.NewEncoder(w)
	enc.SetSortMapKeys(true)
	return enc.Encode(&snapshotV1{
		Index:        s.Index,
		Groups:       sortedValues(s.Groups),
		APIs:         sortedValues(s.APIs),
		Deployments:  sortedValues(s.Deployments),
		Apps:         sortedValues(s.Apps),
		Grants:       sortedValues(s.Grants),
		Traffic:      sortedValues(s.Traffic),
		IPPolicies:   sortedValues(s.IPPolicies),
		BackendKeys:  sortedValues(s.BackendKeys),
		Certificates: sortedValues(s.Certificates),

		ClusterSecret: s.ClusterSecret,
	})
}

// ReadSnapshot decodes a state written by WriteSnapshot.
func ReadSnapshot(r io.Reader) (*State, error) {
	var v [1]byte
	if _, err := io.ReadFull(r, v[:]); err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	if v[0] != snapshotVersion {
		return nil, fmt.Errorf("snapshot format %d is not supported by this binary", v[0])
	}
	var snap snapshotV1
	if err := msgpack.NewDecoder(r).Decode(&snap); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	return &State{
		Index:        snap.Index,
		Groups:       keyed(snap.Groups, func(g Group) string { return g.Name }),
		APIs:         keyed(snap.APIs, API.Ref),
		Deployments:  keyed(snap.Deployments, func(d Deployment) string { return DeploymentKey(d.API, d.Stage) }),
		Apps:         keyed(snap.Apps, func(a App) string { return a.Name }),
		Grants:       keyed(snap.Grants, func(g GrantSpec) string { return GrantKey(g.App, g.API) }),
		Traffic:      keyed(snap.Traffic, func(t TrafficSpec) string { return t.Name }),
		IPPolicies:   keyed(snap.IPPolicies, func(p IPPolicy) string { return p.Name }),
		BackendKeys:  keyed(snap.BackendKeys, func(k BackendKey) string { return k.Name }),
		Certificates: keyed(snap.Certificates, func(c Certificate) string { return c.Name }),

		ClusterSecret: snap.ClusterSecret,
	}, nil
}

// ErrNotFound is returned (wrapped) by commands that name something the state lacks.
var ErrNotFound = errors.New("not found")

// ErrInvalid is returned (wrapped) by commands whose arguments are wrong for the state.
var ErrInvalid = errors.New("invalid")
