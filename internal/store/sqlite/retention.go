package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
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
	return s.writeTxThen(ctx, fn, nil)
}

// ExpireReadings implements retention.Store: per device, a range of the
// (dev, ts) index of the readings table (the newest row stays, so that
// rowids are never reused), the head's readings before the cutoff (their
// batch rows rewritten without them, the newest reading stays), and whole
// blocks that end before it.
func (s *Store) ExpireReadings(ctx context.Context, cuts []retention.Cutoff, limit int) (int, error) {
	s.rh.cmu.Lock()
	defer s.rh.cmu.Unlock()
	hm := &headMove{}
	n, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		*hm = headMove{}
		st, err := tx.PrepareContext(ctx, `DELETE FROM readings WHERE id IN (
			SELECT id FROM readings WHERE dev = (SELECT key FROM devices WHERE id = ?) AND ts < ?
			AND id < (SELECT max(id) FROM readings) AND id <= ? LIMIT ?)`)
		if err != nil {
			return 0, err
		}
		defer st.Close()
		// Whole blocks that end before the cutoff (a block that spans it
		// stays until it is all expired); counted by readings, found by
		// blocks.
		bst, err := tx.PrepareContext(ctx, `DELETE FROM reading_blocks WHERE id IN (
			SELECT id FROM reading_blocks WHERE dev = (SELECT key FROM devices WHERE id = ?) AND t1 < ? LIMIT ?) RETURNING n`)
		if err != nil {
			return 0, err
		}
		defer bst.Close()
		done := 0
		for _, c := range cuts {
			if done >= limit {
				break
			}
			res, err := st.ExecContext(ctx, c.DeviceID, c.Before.UnixMicro(), maxID(c), limit-done)
			if err != nil {
				return 0, err
			}
			k, _ := res.RowsAffected()
			done += int(k)
			cut, top := c.Before.UnixMicro(), maxID(c)
			done += len(s.take(hm, c.DeviceID, limit-done, func(e *rdEntry) bool { return e.ts < cut && e.id <= top }))
			if done >= limit {
				break
			}
			rows, err := bst.QueryContext(ctx, c.DeviceID, c.Before.UnixMicro(), max(1, (limit-done)/blockSize))
			if err != nil {
				return 0, err
			}
			for rows.Next() {
				var n int
				if err := rows.Scan(&n); err != nil {
					rows.Close()
					return 0, err
				}
				done += n
			}
			if err := rows.Close(); err != nil {
				return 0, err
			}
		}
		if err := s.rewriteRows(ctx, tx, hm); err != nil {
			return 0, err
		}
		return done, nil
	}, func() { hm.apply(&s.rh) })
	if err != nil {
		return 0, fmt.Errorf("expire readings: %w", err)
	}
	return n, nil
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

// maxID is the largest reading id a cutoff lets go.
func maxID(c retention.Cutoff) int64 {
	if c.MaxID > 0 {
		return c.MaxID
	}
	return math.MaxInt64
}

var _ retention.RollupStore = (*Store)(nil)

// RollupCursor implements retention.RollupStore.
func (s *Store) RollupCursor(ctx context.Context) (int64, error) {
	var id int64
	err := s.r.QueryRowContext(ctx, `SELECT last_id FROM rollup_cursor WHERE name = 'readings'`).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("rollup cursor: %w", err)
	}
	return id, nil
}

// ReadingsAfter implements retention.RollupStore: a range of the readings
// table's primary key (an older database's rows), then the head's
// readings, whose ids are all larger. With ReadingsHeadOptions.Rollups
// the head keeps every reading after the rollup cursor.
func (s *Store) ReadingsAfter(ctx context.Context, after int64, limit int) ([]retention.RawReading, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT r.id, d.id, r.stream, r.ts, r.data FROM readings r JOIN devices d ON d.key = r.dev
		WHERE r.id > ? ORDER BY r.id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("readings after %d: %w", after, err)
	}
	defer rows.Close()
	var out []retention.RawReading
	for rows.Next() {
		var r retention.RawReading
		var ts int64
		var data string
		if err := rows.Scan(&r.ID, &r.DeviceID, &r.Stream, &ts, &data); err != nil {
			return nil, fmt.Errorf("readings after %d: %w", after, err)
		}
		r.Time, r.Values = micros(ts), []byte(data)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("readings after %d: %w", after, err)
	}
	if len(out) >= limit {
		return out, nil
	}
	if len(out) > 0 {
		after = out[len(out)-1].ID
	}
	recs, err := s.headAfter(after, limit-len(out))
	if err != nil {
		return nil, fmt.Errorf("readings after %d: %w", after, err)
	}
	for _, rec := range recs {
		out = append(out, retention.RawReading{ID: rec.ID, DeviceID: rec.DeviceID, Stream: rec.Stream, Time: micros(rec.Time), Values: rec.Values})
	}
	return out, nil
}

// ApplyRollups implements retention.RollupStore. Once it committed, the
// readings head may move the rows summed up into blocks.
func (s *Store) ApplyRollups(ctx context.Context, rows []retention.Rollup, from, to int64) error {
	_, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		res, err := tx.ExecContext(ctx, `UPDATE rollup_cursor SET last_id = ? WHERE name = 'readings' AND last_id = ?`, to, from)
		if err != nil {
			return 0, err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			if from != 0 {
				return 0, retention.ErrCursorMoved
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO rollup_cursor (name, last_id) VALUES ('readings', ?) ON CONFLICT (name) DO NOTHING`, to)
			if err != nil {
				return 0, err
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return 0, retention.ErrCursorMoved
			}
		}
		st, err := tx.PrepareContext(ctx, `INSERT INTO rollups (dev, res, bucket, stream, field, n, sum, min, max, last, last_ts)
			VALUES ((SELECT key FROM devices WHERE id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (dev, res, bucket, stream, field) DO UPDATE SET
				n = n + excluded.n, sum = sum + excluded.sum, min = min(min, excluded.min), max = max(max, excluded.max),
				last = CASE WHEN excluded.last_ts >= last_ts THEN excluded.last ELSE last END,
				last_ts = max(last_ts, excluded.last_ts)`)
		if err != nil {
			return 0, err
		}
		defer st.Close()
		for _, r := range rows {
			if _, err := st.ExecContext(ctx, r.DeviceID, r.Res, r.Bucket.UnixMicro(), r.Stream, r.Field, r.Count, r.Sum, r.Min, r.Max, r.Last, r.LastAt.UnixMicro()); err != nil {
				return 0, err
			}
		}
		return len(rows), nil
	}, func() { s.rh.rollup.Store(to) })
	if err != nil {
		return fmt.Errorf("apply rollups: %w", err)
	}
	return nil
}

// ExpireRollups implements retention.Store: per device, a range of the
// primary key.
func (s *Store) ExpireRollups(ctx context.Context, res int, cuts []retention.Cutoff, limit int) (int, error) {
	n, err := s.writeTx(ctx, func(tx *sql.Tx) (int, error) {
		// Without rowid: the rows are named by their key.
		st, err := tx.PrepareContext(ctx, `DELETE FROM rollups WHERE (dev, res, bucket, stream, field) IN (
			SELECT dev, res, bucket, stream, field FROM rollups
			WHERE dev = (SELECT key FROM devices WHERE id = ?) AND res = ? AND bucket < ? LIMIT ?)`)
		if err != nil {
			return 0, err
		}
		defer st.Close()
		done := 0
		for _, c := range cuts {
			if done >= limit {
				break
			}
			r, err := st.ExecContext(ctx, c.DeviceID, res, c.Before.UnixMicro(), limit-done)
			if err != nil {
				return 0, err
			}
			k, _ := r.RowsAffected()
			done += int(k)
		}
		return done, nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire rollups: %w", err)
	}
	return n, nil
}
