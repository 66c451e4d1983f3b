//go:build !linux

package sqlite

import "modernc.org/libc"

// walDataSync leaves every sync to the unix VFS (see walvfs_linux.go).
func walDataSync(*libc.TLS, uintptr) (int32, bool) { return 0, false }

// walDeferFd defers no sync (see walvfs_linux.go).
func walDeferFd(uintptr) (int, bool) { return 0, false }

// fdatasync is never called: walDeferFd defers nothing.
func fdatasync(int) error { return nil }
