//go:build !race

package monitors

// raceEnabled: the race detector changes what allocations weigh.
const raceEnabled = false
