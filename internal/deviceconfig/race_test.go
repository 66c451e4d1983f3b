//go:build race

package deviceconfig_test

// rerenderDevices is the fleet of TestRerender10k. The race detector makes
// rendering some ten times slower, so under it the test runs with 2,000
// devices; .ci/run runs it without -race at 10,000.
const rerenderDevices = 2000
