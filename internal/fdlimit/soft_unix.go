//go:build unix

package fdlimit

import "syscall"

// Soft returns the soft limit on open files (RLIMIT_NOFILE).
func Soft() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return uint64(r.Cur), true //nolint:unconvert // int64 on some platforms
}
