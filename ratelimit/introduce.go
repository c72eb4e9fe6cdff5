package ratelimit

import (
	"slices"
	"time"
)

// silentAfter is how long a live member may stay silent (send nothing, or leave a
// batch unacknowledged) before this node introduces itself to it (see Introducer). A
// member that lists this node sends it a quota batch at least every heartbeat (250 ms)
// and acknowledges nonces within milliseconds.
const silentAfter = time.Second

// maxIntroGap caps the doubling gap between introductions to a member that stays
// silent. Each is a join's full state exchange, every live nonce included, and a
// member silent after one is more likely overloaded or dying than unaware of us.
const maxIntroGap = 30 * time.Second

// introductions paces introductions per member: the first when asked (after grace),
// then at doubling gaps while the member stays silent. Owned by one flush loop.
type introductions map[string]*introPace

type introPace struct {
	due time.Time
	gap time.Duration
}

// heard forgets name's silence: the next one starts over.
func (in introductions) heard(name string) { delete(in, name) }

// due reports whether to introduce this node to the silent member name now. A silence
// first seen now waits grace before its first introduction.
func (in introductions) due(name string, now time.Time, grace time.Duration) bool {
	p := in[name]
	if p == nil {
		p = &introPace{due: now.Add(grace), gap: silentAfter / 2}
		in[name] = p
	}
	if now.Before(p.due) {
		return false
	}
	p.gap = min(2*p.gap, maxIntroGap)
	p.due = now.Add(p.gap)
	return true
}

// keepOnly forgets members no longer listed, once there are more than listed.
func (in introductions) keepOnly(names []string) {
	if len(in) <= len(names) {
		return
	}
	for name := range in {
		if !slices.Contains(names, name) {
			delete(in, name)
		}
	}
}
