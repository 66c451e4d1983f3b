//go:build linux

package sqlite

import (
	"syscall"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// walDataSync syncs a WAL file's data with fdatasync(2), as SQLite does
// on Linux when built with HAVE_FDATASYNC; the transpiled SQLite is not,
// and its unix VFS calls fsync(2), which also writes the file's
// modification time: on ext4 a journal commit for every commit of the
// hub, even when the WAL is overwritten in place. fdatasync writes the
// metadata that reading the data back needs (the size of a WAL that
// grew), so a commit is as durable as before. The first sync of a file
// that SQLite created is left to the unix VFS (ok false), which then
// also syncs the directory that holds it, once.
func walDataSync(tls *libc.TLS, pFile uintptr) (rc int32, ok bool) {
	f := cptr[sqlite3.TunixFile](pFile)
	if f.FctrlFlags&sqlite3.UNIXFILE_DIRSYNC != 0 {
		return 0, false
	}
	var err error
	for {
		if err = syscall.Fdatasync(int(f.Fh)); err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		if errno, isErrno := err.(syscall.Errno); isErrno {
			f.FlastErrno = int32(errno)
		}
		return sqlite3.SQLITE_IOERR_FSYNC, true
	}
	return sqlite3.SQLITE_OK, true
}
