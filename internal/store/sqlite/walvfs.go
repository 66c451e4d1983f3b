package sqlite

// walvfs.go: a SQLite VFS that writes a commit's WAL frames in a few
// system calls instead of two per page.
//
// SQLite appends a commit to the WAL as frames, each a 24-byte header and
// a page, and writes both with a write(2) of their own: a commit that
// dirties 400 pages makes 800 system calls, and under ingest the WAL's
// writes were a fifth of the hub's CPU (docs/BENCHMARKS.md). The VFS
// registered here is SQLite's own "unix" VFS with one change: the writes
// SQLite makes to a WAL file are gathered in memory while they are
// contiguous, and written in pwrite(2)s of up to walWriteMax bytes before
// any other operation on that file (sync, read, size, truncate, file
// control, close), or when they stop being contiguous, or when the
// buffer reaches walBufMax.
//
// Why that is safe: with synchronous=FULL SQLite syncs the WAL at every
// commit before it publishes the commit in the WAL index (walFrames, then
// walIndexWriteHdr), so every frame a reader can see has been written and
// synced first; the buffer changes when the bytes reach the kernel, not
// the order of anything another connection can observe. A write error
// comes back from the sync of the commit that wrote the frames, and SQLite
// rolls the transaction back as for a failed write. With synchronous=NORMAL
// a commit is published without a sync, and a reader in another connection
// could look for frames still in the buffer, so Open uses this VFS only
// for the writer connection of a store opened with synchronous=full.
//
// Every other file (the database, its shared memory, journals of
// temporary tables) is opened by the unix VFS exactly as before: the file
// object is the unix VFS's own, with its own methods. A WAL file gets the
// methods of walMethods, which call the unix methods on the same object.

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	"modernc.org/libc/sys/types"
	sqlite3 "modernc.org/sqlite/lib"
)

// walVFSName is the name the VFS is registered under; the writer's DSN
// selects it with vfs=.
const walVFSName = "devicehub-walbuf"

// walBufMax bounds the bytes gathered before they are written: a commit of
// 1,000 devices' messages is about 1 MiB of frames.
const walBufMax = 4 << 20

var (
	walVFSOnce sync.Once
	walVFSErr  error

	// walVFS is the registered VFS: a copy of the unix VFS with its own
	// name and xOpen, in C memory (SQLite keeps a pointer to it, and
	// memory passed to the transpiled C as an address must not be Go's).
	walVFS *sqlite3.Tsqlite3_vfs
	// unixVFS is the address of the unix VFS, unixOpen its xOpen.
	unixVFS  uintptr
	unixOpen uintptr

	// walMethods (C memory) are the methods of a WAL file opened through
	// walVFS; unixWAL are the unix VFS's methods of that file, which they
	// call. Both are set by the first WAL file's open (walMu).
	walMethods    *sqlite3.Tsqlite3_io_methods
	walMethodsPtr uintptr
	unixWAL       sqlite3.Tsqlite3_io_methods

	walMu    sync.Mutex
	walFiles = map[uintptr]*walBuf{} // open WAL files by their sqlite3_file

	// walWrites counts the writes SQLite asked of WAL files opened here,
	// walSyscalls the writes that went to the unix VFS, walDataSyncs the
	// syncs done with fdatasync (tests).
	walWrites, walSyscalls, walDataSyncs atomic.Int64
	// walFsync makes every sync the unix VFS's fsync (benchmarks).
	walFsync atomic.Bool
)

// walBuf is the pending writes of one WAL file: n bytes for offset off,
// in a buffer of C memory of size size.
type walBuf struct {
	buf     uintptr
	n, size int
	off     int64
}

// cptr is p, an address in C memory, as a Go pointer (the transpiled
// SQLite's way to read and write its structs).
func cptr[T any](p uintptr) *T {
	return *(**T)(unsafe.Pointer(&p))
}

// registerWALVFS registers walVFSName once per process.
func registerWALVFS() error {
	walVFSOnce.Do(func() {
		tls := libc.NewTLS()
		defer tls.Close()
		unixVFS = sqlite3.Xsqlite3_vfs_find(tls, 0)
		if unixVFS == 0 {
			walVFSErr = fmt.Errorf("no default VFS")
			return
		}
		name, err := libc.CString(walVFSName)
		if err != nil {
			walVFSErr = err
			return
		}
		p := libc.Xmalloc(tls, types.Size_t(unsafe.Sizeof(sqlite3.Tsqlite3_vfs{})))
		m := libc.Xmalloc(tls, types.Size_t(unsafe.Sizeof(sqlite3.Tsqlite3_io_methods{})))
		if p == 0 || m == 0 {
			walVFSErr = fmt.Errorf("out of memory")
			return
		}
		walVFS, walMethods, walMethodsPtr = cptr[sqlite3.Tsqlite3_vfs](p), cptr[sqlite3.Tsqlite3_io_methods](m), m
		*walMethods = sqlite3.Tsqlite3_io_methods{}
		*walVFS = *cptr[sqlite3.Tsqlite3_vfs](unixVFS)
		unixOpen = walVFS.FxOpen
		walVFS.FzName = name
		walVFS.FpNext = 0
		walVFS.FxOpen = fnPtr(walVFSOpen)
		if rc := sqlite3.Xsqlite3_vfs_register(tls, p, 0); rc != sqlite3.SQLITE_OK {
			walVFSErr = fmt.Errorf("sqlite3_vfs_register: code %d", rc)
		}
	})
	return walVFSErr
}

// fnPtr is the C function pointer of a Go function, as the transpiled
// SQLite calls it.
func fnPtr[F any](f F) uintptr {
	return *(*uintptr)(unsafe.Pointer(&struct{ f F }{f}))
}

// fnOf is the Go function a C function pointer calls.
func fnOf[F any](p uintptr) F {
	return *(*F)(unsafe.Pointer(&struct{ p uintptr }{p}))
}

// walVFSOpen is xOpen: the unix VFS opens the file; a WAL file then gets
// walMethods.
func walVFSOpen(tls *libc.TLS, _ uintptr, zName uintptr, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	rc := fnOf[func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32](unixOpen)(tls, unixVFS, zName, pFile, flags, pOutFlags)
	if rc != sqlite3.SQLITE_OK || flags&sqlite3.SQLITE_OPEN_WAL == 0 {
		return rc
	}
	file := cptr[sqlite3.Tsqlite3_file](pFile)
	if file.FpMethods == 0 {
		return rc
	}
	cur := *cptr[sqlite3.Tsqlite3_io_methods](file.FpMethods)
	walMu.Lock()
	defer walMu.Unlock()
	if walMethods.FxWrite == 0 {
		unixWAL = cur
		m := unixWAL
		m.FxClose = fnPtr(walClose)
		m.FxRead = fnPtr(walRead)
		m.FxWrite = fnPtr(walWrite)
		m.FxTruncate = fnPtr(walTruncate)
		m.FxSync = fnPtr(walSync)
		m.FxFileSize = fnPtr(walFileSize)
		m.FxFileControl = fnPtr(walFileControl)
		if unixWAL.FiVersion >= 3 {
			m.FxFetch = fnPtr(walFetch)
		}
		*walMethods = m
	}
	if cur != unixWAL {
		// Not the methods the wrappers call: leave the file as opened.
		return rc
	}
	walFiles[pFile] = &walBuf{}
	file.FpMethods = walMethodsPtr
	return rc
}

// walFile is the buffer of an open WAL file.
func walFile(pFile uintptr) *walBuf {
	walMu.Lock()
	defer walMu.Unlock()
	return walFiles[pFile]
}

// walWriteMax is the most the unix VFS's xWrite writes in one call: it
// masks the length to 17 bits (seekAndWriteFd), made for one page.
const walWriteMax = 0x1f000

// flush writes the pending bytes of pFile, if any, with the unix VFS's
// xWrite (which loops over short writes), walWriteMax bytes at a time.
func (w *walBuf) flush(tls *libc.TLS, pFile uintptr) int32 {
	if w == nil || w.n == 0 {
		return sqlite3.SQLITE_OK
	}
	write := fnOf[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](unixWAL.FxWrite)
	rc := int32(sqlite3.SQLITE_OK)
	for i := 0; i < w.n && rc == sqlite3.SQLITE_OK; i += walWriteMax {
		n := min(w.n-i, walWriteMax)
		rc = write(tls, pFile, w.buf+uintptr(i), int32(n), w.off+int64(i))
		walSyscalls.Add(1)
	}
	w.n = 0
	return rc
}

// walWrite is xWrite: a write that continues the pending bytes joins
// them; any other write first flushes them.
func walWrite(tls *libc.TLS, pFile uintptr, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	w := walFile(pFile)
	walWrites.Add(1)
	if w == nil {
		walSyscalls.Add(1)
		return fnOf[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](unixWAL.FxWrite)(tls, pFile, zBuf, iAmt, iOfst)
	}
	if w.n > 0 && (iOfst != w.off+int64(w.n) || w.n+int(iAmt) > walBufMax) {
		if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if int(iAmt) >= walWriteMax {
		walSyscalls.Add(1)
		return fnOf[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](unixWAL.FxWrite)(tls, pFile, zBuf, iAmt, iOfst)
	}
	if w.n+int(iAmt) > w.size {
		size := max(2*w.size, 64<<10)
		for size < w.n+int(iAmt) {
			size *= 2
		}
		buf := libc.Xrealloc(tls, w.buf, types.Size_t(size))
		if buf == 0 {
			if rc := w.flush(tls, pFile); rc != sqlite3.SQLITE_OK {
				return rc
			}
			walSyscalls.Add(1)
			return fnOf[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](unixWAL.FxWrite)(tls, pFile, zBuf, iAmt, iOfst)
		}
		w.buf, w.size = buf, size
	}
	if w.n == 0 {
		w.off = iOfst
	}
	libc.Xmemcpy(tls, w.buf+uintptr(w.n), zBuf, types.Size_t(iAmt))
	w.n += int(iAmt)
	return sqlite3.SQLITE_OK
}

// walSync is xSync: the pending bytes are written, then synced (on
// Linux with fdatasync, walvfs_linux.go).
func walSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	if rc := walFile(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	if walFsync.Load() {
		return fnOf[func(*libc.TLS, uintptr, int32) int32](unixWAL.FxSync)(tls, pFile, flags)
	}
	if rc, ok := walDataSync(tls, pFile); ok {
		walDataSyncs.Add(1)
		return rc
	}
	return fnOf[func(*libc.TLS, uintptr, int32) int32](unixWAL.FxSync)(tls, pFile, flags)
}

func walRead(tls *libc.TLS, pFile uintptr, zBuf uintptr, iAmt int32, iOfst int64) int32 {
	if rc := walFile(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fnOf[func(*libc.TLS, uintptr, uintptr, int32, int64) int32](unixWAL.FxRead)(tls, pFile, zBuf, iAmt, iOfst)
}

func walTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	if rc := walFile(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fnOf[func(*libc.TLS, uintptr, int64) int32](unixWAL.FxTruncate)(tls, pFile, size)
}

func walFileSize(tls *libc.TLS, pFile uintptr, pSize uintptr) int32 {
	if rc := walFile(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fnOf[func(*libc.TLS, uintptr, uintptr) int32](unixWAL.FxFileSize)(tls, pFile, pSize)
}

func walFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	if rc := walFile(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fnOf[func(*libc.TLS, uintptr, int32, uintptr) int32](unixWAL.FxFileControl)(tls, pFile, op, pArg)
}

func walFetch(tls *libc.TLS, pFile uintptr, iOfst int64, iAmt int32, pp uintptr) int32 {
	if rc := walFile(pFile).flush(tls, pFile); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return fnOf[func(*libc.TLS, uintptr, int64, int32, uintptr) int32](unixWAL.FxFetch)(tls, pFile, iOfst, iAmt, pp)
}

// walClose is xClose: the pending bytes are written (SQLite syncs before
// it closes a WAL it keeps), the buffer freed, the file closed.
func walClose(tls *libc.TLS, pFile uintptr) int32 {
	walMu.Lock()
	w := walFiles[pFile]
	delete(walFiles, pFile)
	walMu.Unlock()
	rc := w.flush(tls, pFile)
	if w != nil && w.buf != 0 {
		libc.Xfree(tls, w.buf)
	}
	if crc := fnOf[func(*libc.TLS, uintptr) int32](unixWAL.FxClose)(tls, pFile); rc == sqlite3.SQLITE_OK {
		rc = crc
	}
	return rc
}
