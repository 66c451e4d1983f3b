//go:build race

package natstest

// raceFactor stretches the readiness wait: the race detector makes the
// servers' start several times slower.
const raceFactor = 2
