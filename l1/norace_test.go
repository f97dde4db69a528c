//go:build !race

package l1

// raceEnabled reports whether the race detector is on: the tests then do
// fewer iterations, each being much slower.
const raceEnabled = false
