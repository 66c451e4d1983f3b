package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/retention"
)

var _ retention.Store = (*Store)(nil)

// RetentionDevices implements retention.Store.
func (s *Store) RetentionDevices(ctx context.Context, after string, n int) ([]retention.Device, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, type FROM devices WHERE id > $1 ORDER BY id LIMIT $2`, after, n)
	if err != nil {
		return nil, fmt.Errorf("retention devices: %w", err)
	}
	var out []retention.Device
	var d retention.Device
	if _, err := pgx.ForEachRow(rows, []any{&d.ID, &d.Type}, func() error {
		out = append(out, d)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("retention devices: %w", err)
	}
	return out, nil
}

// ExpireReadings implements retention.Store: per device, a range of the
// (device_id, ts, id) key, in one transaction. The newest reading of the
// table stays, like on SQLite. Expiry calls it only for the devices whose
// window is shorter than the longest; the rest go with whole partitions
// (DropReadings).
func (s *Store) ExpireReadings(ctx context.Context, cuts []retention.Cutoff, limit int) (int, error) {
	done := 0
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for _, c := range cuts {
			if done >= limit {
				break
			}
			// The outer conditions repeat the key's device and time, so
			// that only the partitions before the cutoff are probed.
			tag, err := tx.Exec(ctx, `DELETE FROM readings WHERE device_id = $1 AND ts < $2 AND (ts, id) IN (
				SELECT ts, id FROM readings WHERE device_id = $1 AND ts < $2
				AND id < (SELECT max(id) FROM readings) AND id <= $3 LIMIT $4)`, c.DeviceID, c.Before, maxID(c), limit-done)
			if err != nil {
				return err
			}
			done += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire readings: %w", err)
	}
	return done, nil
}

// StripMessagePayloads implements retention.Store: a range of the
// primary key, whose payloads are deleted from message_payloads. The
// expirer drops whole days instead (DropMessagePayloads); this is the row
// delete of the retention.Store contract.
func (s *Store) StripMessagePayloads(ctx context.Context, before time.Time, after int64, limit int) (int, int64, error) {
	var expired int
	last := after
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT count(*), coalesce(max(id), $1) FROM (SELECT id, received_at FROM messages WHERE id > $1 ORDER BY id LIMIT $2) m WHERE received_at < $3`,
			after, limit, before).Scan(&expired, &last)
		if err != nil || expired == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM message_payloads WHERE id > $1 AND id <= $2 AND received_at < $3`, after, last, before)
		return err
	})
	if err != nil {
		return 0, after, fmt.Errorf("strip message payloads: %w", err)
	}
	return expired, last, nil
}

// ExpireMessages implements retention.Store: the oldest records by id,
// with their message_ids entries; the newest stays, so that message ids
// never go back after a restart. Expiry drops partitions instead
// (DropMessages); this is the row delete of the retention.Store contract.
func (s *Store) ExpireMessages(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `WITH gone AS (DELETE FROM messages WHERE id IN (
				SELECT id FROM (SELECT id, received_at FROM messages ORDER BY id LIMIT $1) m WHERE received_at < $2)
				AND id < (SELECT max(id) FROM messages)
				RETURNING id, device_id, msg_id, received_at),
			ids AS (DELETE FROM message_ids m USING gone WHERE m.device_id = gone.device_id AND m.msg_id = gone.msg_id AND m.id = gone.id),
			pl AS (DELETE FROM message_payloads p USING gone WHERE p.id = gone.id AND p.received_at = gone.received_at)
			SELECT count(*) FROM gone`, limit, before).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("expire messages: %w", err)
	}
	return n, nil
}

// ExpireEvents implements retention.Store: the oldest events by seq.
// Expiry drops ranges instead (DropEvents); this is the row delete of the
// retention.Store contract.
func (s *Store) ExpireEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.exec(ctx, `DELETE FROM events WHERE seq IN (
		SELECT seq FROM (SELECT seq, time FROM events ORDER BY seq LIMIT $1) e WHERE time < $2)
		AND seq < (SELECT max(seq) FROM events)`, limit, before)
	if err != nil {
		return 0, fmt.Errorf("expire events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// DiskSize returns the bytes of the tables of the store's schema, with
// their indexes and TOAST.
func (s *Store) DiskSize(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
		JOIN pg_namespace ns ON ns.oid = c.relnamespace
		WHERE ns.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')`).Scan(&n); err != nil {
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
	err := s.pool.QueryRow(ctx, `SELECT last_id FROM rollup_cursor WHERE name = 'readings'`).Scan(&id)
	if errNoRows(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("rollup cursor: %w", err)
	}
	return id, nil
}

// ReadingsAfter implements retention.RollupStore: a range of the primary key.
func (s *Store) ReadingsAfter(ctx context.Context, after int64, limit int) ([]retention.RawReading, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, device_id, stream, ts, data FROM readings WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("readings after %d: %w", after, err)
	}
	var out []retention.RawReading
	var r retention.RawReading
	if _, err := pgx.ForEachRow(rows, []any{&r.ID, &r.DeviceID, &r.Stream, &r.Time, &r.Values}, func() error {
		r.Time = r.Time.UTC()
		out = append(out, r)
		r.Values = nil
		return nil
	}); err != nil {
		return nil, fmt.Errorf("readings after %d: %w", after, err)
	}
	return out, nil
}

// ApplyRollups implements retention.RollupStore: the cursor moves only
// from where this batch started (compare and set), so two nodes never sum
// the same readings twice.
func (s *Store) ApplyRollups(ctx context.Context, rows []retention.Rollup, from, to int64) error {
	n := len(rows)
	device, stream, field := make([]string, n), make([]string, n), make([]string, n)
	res := make([]int32, n)
	bucket, lastAt := make([]time.Time, n), make([]time.Time, n)
	count := make([]int64, n)
	sum, mn, mx, last := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i, r := range rows {
		device[i], stream[i], field[i], res[i], bucket[i], lastAt[i] = r.DeviceID, r.Stream, r.Field, int32(r.Res), r.Bucket, r.LastAt
		count[i], sum[i], mn[i], mx[i], last[i] = r.Count, r.Sum, r.Min, r.Max, r.Last
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE rollup_cursor SET last_id = $1 WHERE name = 'readings' AND last_id = $2`, to, from)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			if from != 0 {
				return retention.ErrCursorMoved
			}
			tag, err := tx.Exec(ctx, `INSERT INTO rollup_cursor (name, last_id) VALUES ('readings', $1) ON CONFLICT (name) DO NOTHING`, to)
			if err != nil {
				return err
			}
			if tag.RowsAffected() != 1 {
				return retention.ErrCursorMoved
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO rollups AS r (device_id, res, bucket, stream, field, n, sum, min, max, last, last_ts)
			SELECT * FROM unnest($1::text[], $2::int4[], $3::timestamptz[], $4::text[], $5::text[], $6::int8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::timestamptz[])
			ON CONFLICT (device_id, res, bucket, stream, field) DO UPDATE SET
				n = r.n + excluded.n, sum = r.sum + excluded.sum, min = least(r.min, excluded.min), max = greatest(r.max, excluded.max),
				last = CASE WHEN excluded.last_ts >= r.last_ts THEN excluded.last ELSE r.last END,
				last_ts = greatest(r.last_ts, excluded.last_ts)`,
			device, res, bucket, stream, field, count, sum, mn, mx, last, lastAt)
		return err
	})
	if err != nil {
		if errors.Is(err, retention.ErrCursorMoved) {
			return err
		}
		return fmt.Errorf("apply rollups: %w", err)
	}
	return nil
}

// ExpireRollups implements retention.Store: per device, a range of the
// primary key.
func (s *Store) ExpireRollups(ctx context.Context, res int, cuts []retention.Cutoff, limit int) (int, error) {
	done := 0
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for _, c := range cuts {
			if done >= limit {
				break
			}
			tag, err := tx.Exec(ctx, `DELETE FROM rollups WHERE (device_id, res, bucket, stream, field) IN (
				SELECT device_id, res, bucket, stream, field FROM rollups WHERE device_id = $1 AND res = $2 AND bucket < $3 LIMIT $4)`,
				c.DeviceID, res, c.Before, limit-done)
			if err != nil {
				return err
			}
			done += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire rollups: %w", err)
	}
	return done, nil
}
