//go:build !linux

package sqlite

import "modernc.org/libc"

// walDataSync leaves every sync to the unix VFS (see walvfs_linux.go).
func walDataSync(*libc.TLS, uintptr) (int32, bool) { return 0, false }
