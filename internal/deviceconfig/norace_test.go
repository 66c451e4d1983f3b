//go:build !race

package deviceconfig_test

// rerenderDevices is the fleet of TestRerender10k (see race_test.go).
const rerenderDevices = 10000
