package sqlite

import (
	"context"
	"fmt"
	"time"
)

// Staging of the newest rows.
//
// Durable ingest commits small batches whose messages are all from
// different devices (each device has one message in flight). Every
// per-device index then dirties one leaf per message: readings(dev, ts),
// and the messages index by device. Each dirty page is a WAL frame,
// written, checksummed and fsynced at every commit.
//
// So Commit appends messages and readings to messages_recent and
// readings_recent, which have no index but their rowid: a batch fills a
// few table pages. After foldMessages staged messages, the folder moves
// the staged rows into messages and readings in one transaction, in which
// each index leaf takes all the staged rows of its devices at once. The
// queries read both tables (the staging tables are small, and scanned).
//
// Ids are assigned by the writer (messages: the hub's ids; readings:
// lastReading) and kept by the fold, so cursors stay valid across it. The
// msg_id dedupe looks in the messages index and in recentMsgIDs, the
// (device, msg_id) pairs of the staged messages, which Open rebuilds by
// folding everything first. A crash loses nothing: a fold is one
// transaction, and what is staged is committed.

// foldMessages is how many staged messages start a fold.
const foldMessages = 4000

const (
	messageColumns = `id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at`
	readingColumns = `id, dev, stream, ts, received_at, message_id, data`
)

// foldStatements move the staged rows into the indexed tables.
var foldStatements = []string{
	`INSERT INTO messages (` + messageColumns + `) SELECT ` + messageColumns + ` FROM messages_recent ORDER BY id`,
	`INSERT INTO readings (` + readingColumns + `) SELECT ` + readingColumns + ` FROM readings_recent ORDER BY id`,
	`DELETE FROM messages_recent`,
	`DELETE FROM readings_recent`,
}

// foldLocked moves every staged row into messages and readings. The caller
// holds wmu (or is Open).
func (s *Store) foldLocked(ctx context.Context) (err error) {
	start := time.Now()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("fold recent rows: begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	for _, q := range foldStatements {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("fold recent rows: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("fold recent rows: commit: %w", err)
	}
	n := s.recentMessages
	s.recentMessages = 0
	clear(s.recentMsgIDs)
	s.committed(n)
	s.log.Debug("folded recent rows", "messages", n, "duration", time.Since(start))
	return nil
}

// staged counts messages committed to the staging tables and wakes the
// folder when there are enough. The caller holds wmu.
func (s *Store) staged(messages int) {
	s.recentMessages += messages
	if s.recentMessages >= s.foldEvery {
		select {
		case s.foldKick <- struct{}{}:
		default:
		}
	}
}

// folder folds the staging tables when Commit asks for it, until Close.
func (s *Store) folder() {
	defer close(s.foldDone)
	for {
		select {
		case <-s.ckStop:
			return
		case <-s.foldKick:
		}
		s.wmu.Lock()
		var err error
		if s.recentMessages >= s.foldEvery {
			err = s.foldLocked(context.Background())
		}
		s.wmu.Unlock()
		if err != nil {
			s.log.Warn("fold failed", "err", err)
		}
	}
}
