//go:build race

package node

// raceEnabled: tests whose size is their point skip under the race detector, which
// slows them to minutes; make test runs them without it (test-large).
const raceEnabled = true
