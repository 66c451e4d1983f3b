package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"sync"
)

// Flushing the WAL beside the commits.
//
// At synchronous=FULL every COMMIT appends the transaction's pages to the
// WAL and fsyncs it before it returns: the committer could not write the
// next batch during that fsync (~1 ms, at times several). The committer
// pipelines instead (commit.Syncer): CommitUnsynced commits its batch at
// synchronous=NORMAL, which is the same COMMIT without the fsync, and Sync
// fsyncs the WAL through a descriptor of its own (an fsync of any
// descriptor flushes the file's pages, whoever wrote them) while the next
// batch is written; the committer acks a batch only after a Sync that
// started after its commit returned succeeded. Only the committer's
// transactions run at NORMAL: CommitUnsynced holds the writer connection
// from the pragma to the one that restores FULL, so the other writes on
// it (the API's, retention's) still fsync in their COMMIT.
//
// Why an acked batch survives a power loss as at synchronous=FULL:
//
//   - Recovery reads the WAL from its header and replays frames while each
//     one's salt matches the header and its checksum, which chains over
//     every frame before it, is valid; it stops at the first frame that is
//     not, and keeps the transactions up to the last commit frame before
//     it. Once Sync returned, every frame written before it is on disk:
//     the acked batches' frames are valid and complete whatever happens to
//     the frames written after (a batch being committed during the fsync
//     is lost or kept whole, and it was not acked).
//   - A checkpoint fsyncs the WAL before it copies frames into the
//     database file (SQLite does so at NORMAL and FULL alike), and the
//     checkpointer's connection is at FULL: an unsynced frame never
//     reaches the database file before it is durable in the WAL, and the
//     database file is fsynced before the WAL can start over.
//   - The WAL starts over (restarts at frame 0 with a new salt) only after
//     a checkpoint copied and synced all of it; the writer then fsyncs the
//     new header before the first frame (at NORMAL too). Frames of the
//     previous generation left behind the new ones carry the old salt and
//     end recovery, as a torn frame would; what they held is in the synced
//     database file.
//   - A failed fsync may have dropped dirty pages of the WAL (Linux marks
//     them clean and reports the error once). The frames after them are
//     worthless then: recovery stops at the first frame that did not reach
//     the disk, so a later fsync that succeeds does not make later batches
//     durable. Sync therefore keeps failing after its fsync failed: the
//     committer fails those tickets (no PUBACK: devices send again) and
//     acks nothing more until the hub is restarted, when SQLite's recovery
//     decides what the database holds.
//
// The difference from FULL: readers (the API, the latest-values snapshot)
// see a committed batch for the duration of one fsync (~1 ms) before it is
// durable; a power loss then takes it back, as it would a batch that had
// not committed yet. Its events are published, and its devices acked, only
// after the Sync.

// walSync fsyncs the database's WAL file.
type walSync struct {
	path string

	mu sync.Mutex
	f  *os.File
	// err is the first failed fsync; Sync returns it from then on.
	err error
}

// Sync implements commit.Syncer: it makes every batch that CommitUnsynced
// committed before the call durable.
func (s *Store) Sync(ctx context.Context) error {
	if !s.full {
		return nil // synchronous=normal: commits are not fsynced at all
	}
	return s.wal.sync()
}

func (w *walSync) sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	f, err := w.file()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		w.err = fmt.Errorf("fsync %s failed: commits since the last restart may not be durable, restart the hub: %w", w.path, err)
		return w.err
	}
	return nil
}

// file returns a descriptor of the WAL file, opened again should SQLite
// have replaced the file (it deletes the WAL only when its last connection
// closes, after a checkpoint of all of it: not while the store is open).
// SQLite holds no lock on the WAL file itself (its locks are on the
// database and the -shm file), so closing a descriptor of it is safe.
func (w *walSync) file() (*os.File, error) {
	cur, err := os.Stat(w.path)
	if err != nil {
		return nil, fmt.Errorf("sqlite WAL: %w", err)
	}
	if w.f != nil {
		if fi, err := w.f.Stat(); err == nil && os.SameFile(fi, cur) {
			return w.f, nil
		}
		w.f.Close()
		w.f = nil
	}
	f, err := os.Open(w.path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite WAL for sync: %w", err)
	}
	w.f = f
	return f, nil
}

func (w *walSync) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// restoreFull sets the writer connection back to synchronous=FULL after an
// unsynced commit and releases it; should that fail, the connection is
// discarded (the pool opens a new one with the DSN's FULL) rather than
// left at NORMAL for the writes that expect FULL.
func (s *Store) restoreFull(conn *sql.Conn) {
	if _, err := conn.ExecContext(context.Background(), `PRAGMA synchronous = FULL`); err != nil {
		s.log.Error("restoring synchronous=full on the writer connection failed: closing it", "err", err)
		if err := conn.Raw(func(any) error { return driver.ErrBadConn }); err != nil && !errors.Is(err, driver.ErrBadConn) {
			s.log.Error("discard writer connection", "err", err)
		}
	}
	conn.Close()
}
