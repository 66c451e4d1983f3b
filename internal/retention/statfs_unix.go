//go:build unix

package retention

import "syscall"

// statfsFree returns the bytes available to unprivileged users on the
// filesystem of dir.
func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
