package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/retention"
)

var _ retention.Store = (*Store)(nil)

// RetentionDevices implements retention.Store.
func (s *Store) RetentionDevices(ctx context.Context, after string, n int) ([]retention.Device, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, type FROM devices WHERE id > ? ORDER BY id LIMIT ?`, after, n)
	if err != nil {
		return nil, fmt.Errorf("retention devices: %w", err)
	}
	defer rows.Close()
	var out []retention.Device
	for rows.Next() {
		var d retention.Device
		if err := rows.Scan(&d.ID, &d.Type); err != nil {
			return nil, fmt.Errorf("retention devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// writeTx runs fn in a transaction on the writer, between two commits,
// and counts the rows it changed toward the next checkpoint.
func (s *Store) writeTx(ctx context.Context, fn func(tx *sql.Tx) (int, error)) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	n, err := fn(tx)
	if err != nil {
		tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	s.committed(n)
	return n, nil
}

// ExpireReadings implements retention.Store: per device, a range of the
// (dev, ts) index. The newest reading of the table stays, so that rowids
// are never reused.
func (s *Store) ExpireReadings(ctx context.Context, cuts []retention.Cutoff, limit int) (int, error) {
	n, err := s.writeTx(ctx, func(tx *sql.Tx) (int, error) {
		st, err := tx.PrepareContext(ctx, `DELETE FROM readings WHERE id IN (
			SELECT id FROM readings WHERE dev = (SELECT key FROM devices WHERE id = ?) AND ts < ?
			AND id < (SELECT max(id) FROM readings) LIMIT ?)`)
		if err != nil {
			return 0, err
		}
		defer st.Close()
		done := 0
		for _, c := range cuts {
			if done >= limit {
				break
			}
			res, err := st.ExecContext(ctx, c.DeviceID, c.Before.UnixMicro(), limit-done)
			if err != nil {
				return 0, err
			}
			k, _ := res.RowsAffected()
			done += int(k)
		}
		return done, nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire readings: %w", err)
	}
	return n, nil
}

// StripMessagePayloads implements retention.Store: a range of the
// primary key.
func (s *Store) StripMessagePayloads(ctx context.Context, before time.Time, after int64, limit int) (int, int64, error) {
	last := after
	n, err := s.writeTx(ctx, func(tx *sql.Tx) (int, error) {
		var expired int
		err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(max(id), ?) FROM (SELECT id, received_at FROM messages WHERE id > ? ORDER BY id LIMIT ?) WHERE received_at < ?`,
			after, after, limit, before.UnixMicro()).Scan(&expired, &last)
		if err != nil || expired == 0 {
			return 0, err
		}
		_, err = tx.ExecContext(ctx, `UPDATE messages SET payload = NULL WHERE id > ? AND id <= ? AND received_at < ? AND payload IS NOT NULL`,
			after, last, before.UnixMicro())
		return expired, err
	})
	if err != nil {
		return 0, after, fmt.Errorf("strip message payloads: %w", err)
	}
	return n, last, nil
}

// ExpireMessages implements retention.Store: the oldest records by id;
// the newest stays, so that message ids never go back after a restart.
func (s *Store) ExpireMessages(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.expireOldest(ctx, "messages", `DELETE FROM messages WHERE id IN (
		SELECT id FROM (SELECT id, received_at FROM messages ORDER BY id LIMIT ?) WHERE received_at < ?)
		AND id < (SELECT max(id) FROM messages)`, limit, before)
}

// ExpireEvents implements retention.Store: the oldest events by seq; the
// newest stays, so that seqs never go back after a restart.
func (s *Store) ExpireEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	return s.expireOldest(ctx, "events", `DELETE FROM events WHERE seq IN (
		SELECT seq FROM (SELECT seq, time FROM events ORDER BY seq LIMIT ?) WHERE time < ?)
		AND seq < (SELECT max(seq) FROM events)`, limit, before)
}

func (s *Store) expireOldest(ctx context.Context, what, stmt string, limit int, before time.Time) (int, error) {
	n, err := s.writeTx(ctx, func(tx *sql.Tx) (int, error) {
		res, err := tx.ExecContext(ctx, stmt, limit, before.UnixMicro())
		if err != nil {
			return 0, err
		}
		k, err := res.RowsAffected()
		return int(k), err
	})
	if err != nil {
		return 0, fmt.Errorf("expire %s: %w", what, err)
	}
	return n, nil
}

// DiskSize returns the size of the database file (its pages; the WAL,
// which checkpoints bound, is not counted).
func (s *Store) DiskSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.r.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&n); err != nil {
		return 0, fmt.Errorf("disk size: %w", err)
	}
	return n, nil
}
