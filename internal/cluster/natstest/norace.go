//go:build !race

package natstest

// raceFactor stretches the readiness wait under -race (see race.go).
const raceFactor = 1
