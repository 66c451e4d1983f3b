//go:build !unix

package fdlimit

// Soft reports no limit where the platform has none to read.
func Soft() (uint64, bool) { return 0, false }
