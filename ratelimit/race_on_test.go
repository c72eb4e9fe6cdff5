//go:build race

package ratelimit_test

// raceEnabled: the race detector slows everything several times over, so latency
// figures are only asserted without it.
const raceEnabled = true
