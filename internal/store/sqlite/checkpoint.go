package sqlite

import (
	"context"
	"fmt"
	"time"
)

// Checkpoints.
//
// In WAL mode every commit appends the pages it changed to the WAL, and a
// checkpoint copies them back into the database file. SQLite's automatic
// checkpoint runs inside the commit that crosses 1000 WAL pages: that
// commit, and every device waiting for its ack, pays for copying and
// fsyncing the whole WAL. Ingest changes ~2.6 pages per reading (the
// per-device leaves of the readings and audit indexes), so at 1000 pages
// SQLite checkpoints every ~400 readings and copies the same leaves again
// and again.
//
// The store checkpoints from its own connection in Run instead (its owner
// runs it beside the committer; a store that is not run still has the
// writer's automatic checkpoint below), and
// less often: after checkpointChanges committed changes it runs PASSIVE
// checkpoints beside the writer (they copy what is committed without
// blocking it), and a last short one between two commits, so that the
// whole WAL is in the database and the next commit starts the WAL over
// instead of growing it. SQLite fsyncs the database file only in a round
// that reaches the WAL's end, i.e. in that last round: the checkpointer
// fsyncs the file itself before it, beside the writer, so that the last
// round flushes only the pages it copies, not all the rounds' pages while
// commits wait. The writer's automatic checkpoint stays on with a
// high threshold, as a backstop should the checkpointer fall behind.

// checkpointChanges is how many committed changes start a checkpoint
// (~8,000 WAL pages, 32 MB, for ingest). A variable for the benchmarks.
var checkpointChanges = 3000

const (
	// autoCheckpointPages is the writer's own automatic checkpoint.
	autoCheckpointPages = 40000
	// maxBackgroundRounds bounds the rounds under a write load that
	// outruns the checkpointer.
	maxBackgroundRounds = 4
)

// catchUpPages: background rounds go on until fewer pages than this are
// left for the round that blocks commits. A variable for the benchmarks.
var catchUpPages int64 = 1000

// committed counts changes toward the next checkpoint. The caller holds
// wmu.
func (s *Store) committed(changes int) {
	s.uncheckpointed += changes
	if s.uncheckpointed >= checkpointChanges {
		select {
		case s.ckKick <- struct{}{}:
		default:
		}
	}
}

// Run checkpoints the WAL when Commit asks for it (and sizes the
// writer's page cache for the fleet after each checkpoint), and compacts
// the message log (runMessageLog) and the readings head (runReadings),
// until ctx is done. A failed checkpoint is
// logged and tried again at the next request: the writer's automatic
// checkpoint bounds the WAL meanwhile.
func (s *Store) Run(ctx context.Context) error {
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		s.runMessageLog(ctx)
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		s.runReadings(ctx)
	}()
	defer func() { <-done; <-done }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ckKick:
		}
		// A checkpoint that started finishes: stopping half-way would
		// leave the last (blocking) round to the next start.
		if err := s.checkpoint(context.WithoutCancel(ctx)); err != nil {
			s.log.Warn("checkpoint failed", "err", err)
		}
		// The fleet may have grown or shrunk since the last one.
		if err := s.sizeCache(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("page cache not resized", "err", err)
		}
	}
}

func (s *Store) checkpoint(ctx context.Context) error {
	defer s.ckDone.Add(1)
	start := time.Now()
	var bg walState
	for range maxBackgroundRounds {
		var err error
		if bg, err = s.walCheckpoint(ctx); err != nil {
			return err
		}
		if bg.log-bg.done < catchUpPages {
			break
		}
	}
	if s.syncFirst {
		// A PASSIVE round that does not reach the end of the WAL copies
		// pages into the database file but does not fsync it; the round
		// that does (the blocking one below) would flush every page the
		// background rounds copied while the writer waits. Flushed here,
		// beside the writer, that round is left with the pages it copies
		// itself.
		if err := s.dbFile.Sync(); err != nil {
			return fmt.Errorf("sync database file: %w", err)
		}
	}
	s.wmu.Lock()
	held := time.Now()
	defer func() {
		d := time.Since(held)
		s.wmu.Unlock()
		s.ckHeld.Add(int64(d))
		s.ckHold.Observe(d.Seconds())
		if d > time.Duration(s.ckMaxHeld.Load()) {
			s.ckMaxHeld.Store(int64(d))
		}
	}()
	s.uncheckpointed = 0
	// The commits during the background rounds asked for a checkpoint
	// again (the count was still past checkpointChanges): that request
	// is this checkpoint's. Left queued, it started a second checkpoint
	// at once, whose blocking round stalled the commits again for a
	// WAL that had just started over.
	select {
	case <-s.ckKick:
	default:
	}
	last, err := s.walCheckpoint(ctx)
	if err != nil {
		return err
	}
	// The blocking round copies what the background rounds left; the
	// WAL may have started over in between (then last.log is smaller).
	s.log.Debug("checkpoint", "pages", bg.log, "catch_up_pages", max(last.log-bg.done, last.log), "duration", time.Since(start), "held", time.Since(held))
	return nil
}

// checkpointHold is the time the checkpointer held the writer, in all and
// at most at once.
func (s *Store) checkpointHold() (total, longest time.Duration) {
	return time.Duration(s.ckHeld.Load()), time.Duration(s.ckMaxHeld.Load())
}

// walState is what PRAGMA wal_checkpoint reports: WAL pages, and how
// many of them are in the database file.
type walState struct{ log, done int64 }

func (s *Store) walCheckpoint(ctx context.Context) (walState, error) {
	var busy int
	var st walState
	if err := s.ck.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &st.log, &st.done); err != nil {
		return st, fmt.Errorf("wal checkpoint: %w", err)
	}
	return st, nil
}
