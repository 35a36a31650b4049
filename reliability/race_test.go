//go:build race

package reliability

// The race detector multiplies memory use; memory bounds account for it.
const raceEnabled = true
